"""Content-addressed blobs on disk: raw mail, attachments and recordings, stored once."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from store.dialect import insert_ignoring
from store.models.comms import Blob

_syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


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

    def write_blocking(self, data: bytes, *, sync: bool = True) -> str:
        """Store ``data`` (written, fsynced, then renamed into place) and return its digest.

        ``sync=False`` leaves the fsync to a later ``sync_blocking``: one flush of
        the file system for a whole batch costs less than one per file.
        """
        digest = sha256_hex(data)
        path = self.path_for(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def sync_blocking(self) -> None:
        """Make every blob written so far durable, with one flush of the file system."""
        if _syncfs is None:
            os.sync()
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs {self.root}: {os.strerror(err)}")
        finally:
            os.close(fd)

    async def sync(self) -> None:
        await asyncio.to_thread(self.sync_blocking)

    def read_blocking(self, digest: str) -> bytes:
        return self.path_for(digest).read_bytes()

    async def write(self, data: bytes) -> str:
        return await asyncio.to_thread(self.write_blocking, data)

    def write_many_blocking(self, items: Sequence[bytes]) -> list[str]:
        digests = [self.write_blocking(data, sync=False) for data in items]
        self.sync_blocking()
        return digests

    async def write_many(self, items: Sequence[bytes]) -> list[str]:
        """Store several blobs with one trip to a worker thread."""
        return await asyncio.to_thread(self.write_many_blocking, items)

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
    await record_blobs(session, [(digest, size, content_type)])


async def record_blobs(session: AsyncSession, blobs: Sequence[tuple[str, int, str | None]]) -> None:
    """``record_blob`` for many (digest, size, content type) at once, in one statement."""
    rows = list({digest: {"sha256": digest, "size": size, "content_type": content_type}
                 for digest, size, content_type in blobs}.values())  # fmt: skip
    if not rows:
        return
    await session.execute(insert_ignoring(session, Blob, ["sha256"]), rows)
