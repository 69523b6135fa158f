"""Opening the store: the engine, the session factory, the blob store and the bus."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from store.blobs import BlobStore
from store.bus import EventBus, open_bus
from store.engine import make_engine, make_sessionmaker

log = logging.getLogger(__name__)


@dataclass
class Store:
    """Everything a part of Rapport needs to read and write the shared store."""

    url: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    bus: EventBus

    def session(self) -> AsyncSession:
        return self.sessionmaker()


@contextlib.asynccontextmanager
async def open_store(
    url: str, blob_dir: str | Path, node_id: str | None = None
) -> AsyncIterator[Store]:
    """Open the store at ``url`` (already migrated) and close it cleanly on exit."""
    engine = make_engine(url)
    try:
        async with open_bus(url, node_id=node_id) as bus:
            yield Store(
                url=url,
                engine=engine,
                sessionmaker=make_sessionmaker(engine),
                blobs=BlobStore(Path(blob_dir)),
                bus=bus,
            )
    finally:
        await engine.dispose()
