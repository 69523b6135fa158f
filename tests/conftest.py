"""Fixtures shared by every test: databases on both engines, real peers or a clear skip.

Under ``CI=true`` a missing peer (PostgreSQL, Dovecot, Chromium) fails the test
instead of skipping it, so CI can never pass by testing less.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.peers.postgres import (
    UNREACHABLE,
    asyncpg_dsn,
    create_scratch_database,
    drop_scratch_database,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_PG_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"


def missing_peer(reason: str) -> None:
    """Skip for a missing real peer on a developer machine; fail under CI."""
    if IN_CI:
        pytest.fail(f"CI=true and a real peer is missing: {reason}")
    pytest.skip(reason)


async def _pg_reachable(url: str) -> str | None:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(asyncpg_dsn(url)), 5)
    except UNREACHABLE as err:
        return f"PostgreSQL at {make_url(url).render_as_string()} unreachable: {err}"
    await conn.close()
    return None


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """URL of a PostgreSQL database the tests may create other databases from."""
    url = os.environ.get("RAPPORT_TEST_PG_URL", DEFAULT_PG_URL)
    problem = asyncio.run(_pg_reachable(url))
    if problem:
        missing_peer(problem)
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = asyncio.run(create_scratch_database(pg_admin_url, "rapport_test"))
    try:
        yield url
    finally:
        asyncio.run(drop_scratch_database(pg_admin_url, url))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'rapport.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each engine in turn: the tests that take a database run once on each."""
    return str(request.param)


@pytest.fixture
def db_url(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine in turn."""
    if engine_name == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'rapport.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _migrate_blocking(url: str) -> None:
    from store.migrate import upgrade_to_head

    asyncio.run(upgrade_to_head(url))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per run; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "rapport.db"
    _migrate_blocking(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database migrated to head once per run; each test gets a copy."""
    url = asyncio.run(create_scratch_database(pg_admin_url, "rapport_template"))
    try:
        _migrate_blocking(url)
        yield url
    finally:
        asyncio.run(drop_scratch_database(pg_admin_url, url))


@pytest.fixture
def migrated_url(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database on each engine, at head: a copy of the run's migrated template.

    Migrating from empty is tested once per engine (tests/store/test_migrations.py);
    copying costs milliseconds where migrating every test's database cost seconds.
    """
    if engine_name == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "rapport.db"
        shutil.copyfile(template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    admin: str = request.getfixturevalue("pg_admin_url")
    source: str = request.getfixturevalue("pg_template")
    url = asyncio.run(create_scratch_database(admin, "rapport_test", template=source))
    try:
        yield url
    finally:
        asyncio.run(drop_scratch_database(admin, url))


@pytest.fixture
async def store(migrated_url: str, tmp_path: Path) -> AsyncIterator[object]:
    """An open ``store.db.Store`` on a migrated database of each engine."""
    from store.db import open_store

    async with open_store(migrated_url, tmp_path / "blobs") as opened:
        yield opened


@pytest.fixture
async def session(migrated_url: str) -> AsyncIterator[object]:
    """An ORM session on a migrated database of each engine; rolled back at the end."""
    from store.engine import make_engine, make_sessionmaker

    engine = make_engine(migrated_url)
    try:
        async with make_sessionmaker(engine)() as opened:
            yield opened
    finally:
        await engine.dispose()


@pytest.fixture
def dovecot() -> Iterator[object]:
    """A real Dovecot IMAP server on a loopback port with an empty Maildir."""
    import shutil
    import tempfile

    from tests.peers.dovecot import available, run_dovecot

    problem = available()
    if problem:
        missing_peer(problem)
    # Dovecot serves mail as an unprivileged user, who cannot enter pytest's 0700 tmp dirs.
    root = Path(tempfile.mkdtemp(prefix="rapport-dovecot-"))
    try:
        with run_dovecot(root) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """Debian's headless Chromium driven by Playwright (no browser download)."""
    if not Path(CHROMIUM).exists():
        missing_peer("Chromium is not installed (Debian package chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave screenshots for people to look at (test-artifacts/)."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
