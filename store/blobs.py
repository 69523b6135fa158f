"""Content-addressed blobs on disk: raw mail, attachments and recordings, stored once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from store.models.comms import Blob


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Files named by their SHA-256 under ``root/ab/cd/<hash>``; writes are atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def write_blocking(self, data: bytes) -> str:
        """Store ``data`` (fsynced, then renamed into place) and return its digest."""
        digest = sha256_hex(data)
        path = self.path_for(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def read_blocking(self, digest: str) -> bytes:
        return self.path_for(digest).read_bytes()

    async def write(self, data: bytes) -> str:
        return await asyncio.to_thread(self.write_blocking, data)

    async def read(self, digest: str) -> bytes:
        return await asyncio.to_thread(self.read_blocking, digest)

    async def put(self, session: AsyncSession, data: bytes, content_type: str | None = None) -> str:
        """Write the bytes to disk, then record the blob row (idempotent) in ``session``."""
        digest = await self.write(data)
        await record_blob(session, digest, len(data), content_type)
        return digest


async def record_blob(
    session: AsyncSession, digest: str, size: int, content_type: str | None = None
) -> None:
    """Insert the blob row unless it is already there (safe under concurrent writers)."""
    values = {"sha256": digest, "size": size, "content_type": content_type}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        await session.execute(
            postgresql.insert(Blob)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["sha256"])
        )
    else:
        await session.execute(
            sqlite.insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
        )
