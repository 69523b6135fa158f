"""How fast the store takes rows, per write style and engine, beside the foundation's baseline.

The foundation issue measured, on this machine kind: the ORM through aiosqlite
at ~439 rows/s for one row per commit against ~1,470 for plain pysqlite, and
Core ``insertmany`` in batches at ~15,000 rows/s on SQLite and ~9,000-11,000
on PostgreSQL.  Hot paths (mail ingestion, tracking hits, AMI events) batch
because of it.  Run: ``make bench`` or ``.venv/bin/python bench/store_writes.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from store.engine import make_engine, make_sessionmaker  # noqa: E402
from store.migrate import upgrade_to_head  # noqa: E402
from store.models import AuditEntry  # noqa: E402
from tests.peers.postgres import (  # noqa: E402
    UNREACHABLE,
    create_scratch_database,
    drop_scratch_database,
)

BASELINE_ROWS_S = {
    "orm, 1 row/commit, aiosqlite": 439,
    "pysqlite, 1 row/commit": 1_470,
    "core insertmany, batches, aiosqlite": 15_000,
    "core insertmany, batches, postgresql": 10_000,
}
PG_ADMIN_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"
BATCH = 500


def _row(n: int) -> dict[str, object]:
    return {
        "record_type": "lead", "record_id": n, "action": "update", "field": "status",
        "old_value": "new", "new_value": "contacted", "at": dt.datetime.now(dt.UTC),
    }  # fmt: skip


async def orm_one_per_commit(url: str, rows: int) -> None:
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    for n in range(rows):
        async with maker() as session, session.begin():
            session.add(AuditEntry(**_row(n)))
    await engine.dispose()


async def core_batches(url: str, rows: int) -> None:
    engine = make_engine(url)
    for start in range(0, rows, BATCH):
        async with engine.begin() as conn:
            await conn.execute(
                insert(AuditEntry), [_row(n) for n in range(start, min(rows, start + BATCH))]
            )
    await engine.dispose()


def pysqlite_one_per_commit(path: str, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for n in range(rows):
        row = _row(n)
        conn.execute(
            "INSERT INTO audit_trail (record_type, record_id, action, field, old_value,"
            " new_value, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row["record_type"], row["record_id"], row["action"], row["field"],
             row["old_value"], row["new_value"], str(row["at"])),
        )  # fmt: skip
        conn.commit()
    conn.close()


async def _timed(
    label: str, rows: int, run: Callable[[], Awaitable[None]]
) -> tuple[str, int, float]:
    began = time.perf_counter()
    await run()
    return label, rows, rows / (time.perf_counter() - began)


async def _fresh_sqlite(root: Path) -> str:
    url = f"sqlite+aiosqlite:///{root / uuid.uuid4().hex}.db"
    await upgrade_to_head(url)
    return url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = await _fresh_sqlite(root)
        results.append(
            await _timed(
                "orm, 1 row/commit, aiosqlite",
                args.rows,
                lambda: orm_one_per_commit(url, args.rows),
            )
        )
        url = await _fresh_sqlite(root)
        path = make_url(url).database or ""
        results.append(
            await _timed("pysqlite, 1 row/commit", args.rows,
                         lambda: asyncio.to_thread(pysqlite_one_per_commit, path, args.rows))
        )  # fmt: skip
        url = await _fresh_sqlite(root)
        many = args.rows * 10
        results.append(
            await _timed(
                "core insertmany, batches, aiosqlite", many, lambda: core_batches(url, many)
            )
        )
    try:
        pg_url = await create_scratch_database(args.pg_url, "rapport_bench")
    except UNREACHABLE as err:
        print(f"(PostgreSQL not measured: {err})")
    else:
        try:
            await upgrade_to_head(pg_url)
            many = args.rows * 10
            results.append(
                await _timed(
                    "core insertmany, batches, postgresql", many, lambda: core_batches(pg_url, many)
                )
            )
        finally:
            await drop_scratch_database(args.pg_url, pg_url)

    print(f"{'write style':<40} {'rows':>8} {'rows/s':>10} {'baseline':>10} {'ratio':>7}")
    for label, rows, rate in results:
        base = BASELINE_ROWS_S[label]
        print(f"{label:<40} {rows:>8} {rate:>10,.0f} {base:>10,} {rate / base:>7.2f}")
    orm, plain = results[0][2], results[1][2]
    print(f"\nORM one-row-per-commit vs pysqlite: {plain / orm:.1f}x slower (baseline 3.3x)")


if __name__ == "__main__":
    asyncio.run(main())
