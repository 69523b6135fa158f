"""Scratch PostgreSQL databases for tests and benchmarks, made from an admin URL and dropped."""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy.engine import make_url

UNREACHABLE = (OSError, asyncpg.PostgresError, TimeoutError)


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL as asyncpg itself takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_scratch_database(
    admin_url: str, prefix: str = "rapport_scratch", *, template: str | None = None
) -> str:
    """A new database next to ``admin_url``'s, empty or a copy of ``template``; its URL.

    ``UNREACHABLE`` errors pass up.  A copy is a file copy on the server, far
    cheaper than migrating a new database; nobody may be connected to the template.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copied = f' TEMPLATE "{make_url(template).database}"' if template else ""
    await _admin(admin_url, f'CREATE DATABASE "{name}"{copied}')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_scratch_database(admin_url: str, url: str) -> None:
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
