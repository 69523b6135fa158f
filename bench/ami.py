"""The phone side under load, one section at a time.

Sections (all by default, or one with ``--only NAME``):
  lookup  Seeds N contacts with mobile numbers (a third with a landline too) and
          their phone identity rows into a scratch SQLite file and a scratch
          PostgreSQL database, then times ``store.callers.match_ids`` (the query
          run for every call) over random lookups on a Chengdu trunk: hits in
          many spellings (+86, 0086, 86, trunk 0, IP prefix, outside-line digit,
          full-width digits, local landline), misses that share the last 8
          digits of a stored number, and contacts in the recycle bin.  Prints
          p50/p99 in microseconds beside the goals, the driver's own round trip
          (the floor under any query), the caller card, and each query plan.
          Goals (phone issue): match_ids p99 < 200 us on SQLite, < 2 ms on PostgreSQL.
Needs PostgreSQL on 127.0.0.1 for the PostgreSQL rows (skipped with the reason otherwise).
Run: .venv/bin/python bench/ami.py [--only lookup] [--contacts 1000000] [--lookups 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: E402

from daemon.heap import settle_after_start  # noqa: E402
from store.base import utcnow  # noqa: E402
from store.callers import (  # noqa: E402
    MATCH_IDS_QUERY,
    PhoneIndexReader,
    find_callers,
    match_ids,
)
from store.engine import make_engine, make_sessionmaker  # noqa: E402
from store.migrate import upgrade_to_head  # noqa: E402
from store.phones import PhoneRegion, normalise_phone  # noqa: E402
from tests.peers.postgres import (  # noqa: E402
    UNREACHABLE,
    asyncpg_dsn,
    create_scratch_database,
    drop_scratch_database,
)

PG_ADMIN_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


# Section: lookup ------------------------------------------------------------------------

TRUNK = PhoneRegion(country="CN", area_code="028", outside_prefix="9")
GOAL_P99_US = {"SQLite": 200, "PostgreSQL": 2_000}
SEED_BATCH = 50_000
WARM_UP = 500
CARD_LOOKUPS = 500
# Stored numbers use these prefixes and area codes; misses take the others with the same
# last 8 digits, so a match on the last N digits would show up as a wrong hit.
STORED_MOBILE = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150",
                 "151", "152", "155", "156", "157", "158", "159", "180", "181", "182",
                 "183", "185", "186", "187", "188", "189"]  # fmt: skip
MISSED_MOBILE = ["147", "166", "173", "177", "191", "198", "199"]
STORED_AREAS = ["28", "10", "21"]  # 28 is the trunk's own: its numbers also come without it
MISSED_AREAS = ["20", "25", "755"]
BIN_EVERY = 100  # one contact in a hundred is in the recycle bin


def _mobile(n: int) -> str:
    # n -> 8 digits is a bijection on [0, 10**8): 48271 is prime to 10**8.
    return STORED_MOBILE[n % len(STORED_MOBILE)] + f"{n * 48271 % 10**8:08d}"


def _landline(n: int) -> tuple[str, str] | None:
    """(area code, subscriber) for every third contact; subscribers unique, 2xxxxxxx-7xxxxxxx."""
    if n % 3:
        return None
    j = n // 3
    return STORED_AREAS[j % len(STORED_AREAS)], str(20_000_000 + j * 7_654_321 % 60_000_000)


def _in_bin(n: int) -> bool:
    return n % BIN_EVERY == BIN_EVERY // 2


@dataclass
class Seeded:
    contacts: int
    identities: int
    seconds: float


def _contact(n: int, stamp: Any) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """Contact ``n``'s row and its phone identity rows, as ``store.identity`` would index them."""
    record_id = n + 1
    mobile = _mobile(n)
    landline = _landline(n)
    phone = f"(0{landline[0]}) {landline[1][:4]}-{landline[1][4:]}" if landline else None
    mobile_raw = f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}"
    person = (record_id, "", f"客户{n}", phone, mobile_raw, "", stamp, stamp,
              stamp if _in_bin(n) else None)  # fmt: skip
    identities = []
    if landline and phone:
        e164 = f"+86{landline[0]}{landline[1]}"
        identities.append((e164, phone, e164, "contact", record_id, "phone", stamp))
    e164 = f"+86{mobile}"
    identities.append((e164, mobile_raw, e164, "contact", record_id, "mobile", stamp))
    return person, identities


def _rows(
    contacts: int, stamp: Any
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Contacts and their identity rows in batches of ``SEED_BATCH``."""
    for start in range(0, contacts, SEED_BATCH):
        people, identities = [], []
        for n in range(start, min(contacts, start + SEED_BATCH)):
            person, phones = _contact(n, stamp)
            people.append(person)
            identities += phones
        yield people, identities


def seeded_keys_disagree(contacts: int, rng: random.Random, samples: int = 1_000) -> list[str]:
    """Seeded identity rows that ``store.identity.index_record`` would have keyed otherwise."""
    wrong = []
    for n in rng.sample(range(contacts), min(samples, contacts)):
        for e164, raw, *_ in _contact(n, None)[1]:
            key = normalise_phone(raw)  # index_record's default region
            if key is None or key.match_key != e164:
                wrong.append(f"{raw!r} seeded as {e164}, indexed as {key}")
    return wrong


CONTACT_COLUMNS = ("id", "first_name", "last_name", "phone", "mobile", "description",
                   "created_at", "updated_at", "deleted_at")  # fmt: skip
IDENTITY_COLUMNS = ("e164", "raw", "match_key", "record_type", "record_id", "field", "created_at")


SEEDED_TABLES = ("contacts", "phone_identities")


def seed_sqlite_blocking(path: Path, contacts: int) -> Seeded:
    """sqlite3 executemany in big batches in one transaction, secondary indexes built after.

    Building an index from sorted rows is far cheaper than keeping it up to date
    through a million random inserts; the indexes made are the migration's own.
    """
    began = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: the load stays in memory
    marks = ", ".join("?" * len(SEEDED_TABLES))
    indexes = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        f" AND tbl_name IN ({marks})",
        SEEDED_TABLES,
    ).fetchall()
    conn.execute("BEGIN")
    for name, _sql in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    # The form SQLAlchemy stores a UTC DATETIME in on SQLite (store.dialect.json_timestamps).
    stamp = utcnow().isoformat(sep=" ", timespec="microseconds")[:26]
    identities = 0
    for people, phones in _rows(contacts, stamp):
        conn.executemany(_insert("contacts", CONTACT_COLUMNS, "?"), people)
        conn.executemany(_insert("phone_identities", IDENTITY_COLUMNS, "?"), phones)
        identities += len(phones)
    for _name, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return Seeded(contacts, identities, time.perf_counter() - began)


def _insert(table: str, columns: tuple[str, ...], mark: str) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


async def seed_postgresql(url: str, contacts: int) -> Seeded:
    """COPY in big batches, plain indexes built after, the id sequence moved on, ANALYZE."""
    began = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'")
        # Constraints (primary keys, unique) stay; the plain indexes are rebuilt as they were.
        indexes = await conn.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY($1)"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            list(SEEDED_TABLES),
        )
        identities = 0
        async with conn.transaction():
            for index in indexes:
                await conn.execute(f'DROP INDEX "{index["indexname"]}"')
            for people, phones in _rows(contacts, utcnow()):
                await conn.copy_records_to_table(
                    "contacts", records=people, columns=CONTACT_COLUMNS
                )
                await conn.copy_records_to_table(
                    "phone_identities", records=phones, columns=IDENTITY_COLUMNS
                )
                identities += len(phones)
            for index in indexes:
                await conn.execute(index["indexdef"])
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('contacts', 'id'), max(id)) FROM contacts"
        )
        await conn.execute("ANALYZE contacts; ANALYZE phone_identities")
    finally:
        await conn.close()
    return Seeded(contacts, identities, time.perf_counter() - began)


@dataclass(frozen=True)
class Lookup:
    sent: str
    expected: frozenset[tuple[str, int]]
    spelling: str


def _spell_mobile(rng: random.Random, mobile: str) -> tuple[str, str]:
    return rng.choice([
        ("+86", f"+86{mobile}"), ("0086", f"0086{mobile}"), ("86", f"86{mobile}"),
        ("trunk 0", f"0{mobile}"), ("bare", mobile), ("IP 17951", f"17951{mobile}"),
        ("outside 9", f"9{mobile}"), ("full-width", mobile.translate(FULL_WIDTH)),
        ("spaced", f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}"),
    ])  # fmt: skip


def _spell_landline(rng: random.Random, area: str, subscriber: str) -> tuple[str, str]:
    choices = [
        ("0 + area", f"0{area}{subscriber}"), ("+86", f"+86{area}{subscriber}"),
        ("0086", f"0086{area}{subscriber}"), ("IP 17951", f"179510{area}{subscriber}"),
        ("outside 9", f"90{area}{subscriber}"), ("dashed", f"0{area}-{subscriber}"),
    ]  # fmt: skip
    if "0" + area == TRUNK.area_code:
        choices += [("local", subscriber), ("outside 9 + local", f"9{subscriber}")]
    return rng.choice(choices)


def make_lookups(contacts: int, count: int, rng: random.Random) -> list[Lookup]:
    """About 70% hits in many spellings, 30% misses sharing a stored number's last 8 digits."""
    lookups = []
    for _ in range(count):
        n = rng.randrange(contacts)
        expected = frozenset() if _in_bin(n) else frozenset({("contact", n + 1)})
        landline = _landline(n)
        roll = rng.random()
        if roll < 0.7:
            if landline and rng.random() < 0.5:
                spelling, sent = _spell_landline(rng, *landline)
            else:
                spelling, sent = _spell_mobile(rng, _mobile(n))
            lookups.append(Lookup(sent, expected, spelling))
        elif roll < 0.85 or not landline:
            last8 = _mobile(n)[3:]
            sent = f"+86{rng.choice(MISSED_MOBILE)}{last8}"
            lookups.append(Lookup(sent, frozenset(), "miss: mobile, same last 8"))
        else:
            sent = f"0{rng.choice(MISSED_AREAS)}{landline[1]}"
            lookups.append(Lookup(sent, frozenset(), "miss: landline, same last 8"))
    return lookups


def _pct_us(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1e6 if len(values) > 1 else values[0] * 1e6


@dataclass
class Timed:
    engine: str
    match_ids: list[float] = field(default_factory=list)
    session_ids: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    cards: list[float] = field(default_factory=list)
    right: int = 0
    wrong: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)


async def _driver_round_trip(session: AsyncSession) -> Callable[[], Awaitable[object]]:
    raw = (await (await session.connection()).get_raw_connection()).driver_connection
    assert raw is not None
    if isinstance(raw, asyncpg.Connection):
        return lambda: raw.fetchval("SELECT 1")
    return lambda: raw.execute_fetchall("SELECT 1")


async def _plan(session: AsyncSession, engine: str, key: str) -> list[str]:
    statement = MATCH_IDS_QUERY.params(match_key=key).compile(
        dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
    )
    explain = "EXPLAIN QUERY PLAN" if engine == "SQLite" else "EXPLAIN"
    rows = await session.execute(text(f"{explain} {statement}"))
    return [str(row[-1]) for row in rows]


async def time_lookups(url: str, engine: str, lookups: list[Lookup]) -> Timed:
    timed = Timed(engine)
    store_engine = make_engine(url)
    sessions = make_sessionmaker(store_engine)
    reader = PhoneIndexReader(store_engine)
    try:
        async with sessions() as session:
            for one in lookups[:WARM_UP]:
                await reader.match_ids(one.sent, TRUNK)
                await match_ids(session, one.sent, TRUNK)
            settle_after_start()  # as the daemon does once it has started
            clock = time.perf_counter
            # What the phone service runs for every ringing call.
            for one in lookups:
                began = clock()
                found = await reader.match_ids(one.sent, TRUNK)
                timed.match_ids.append(clock() - began)
                if frozenset(found) == one.expected:
                    timed.right += 1
                elif len(timed.wrong) < 5:
                    timed.wrong.append(f"{one.spelling}: {one.sent!r} gave {found}")
            # The same query inside an ORM session (filing, record pages).
            for one in lookups:
                began = clock()
                found = await match_ids(session, one.sent, TRUNK)
                timed.session_ids.append(clock() - began)
                if frozenset(found) != one.expected and len(timed.wrong) < 5:
                    timed.wrong.append(f"session {one.spelling}: {one.sent!r} gave {found}")
            round_trip = await _driver_round_trip(session)
            for _ in range(len(lookups)):
                began = clock()
                await round_trip()
                timed.floor.append(clock() - began)
            for one in lookups[:CARD_LOOKUPS]:
                began = clock()
                await find_callers(session, one.sent, TRUNK)
                timed.cards.append(clock() - began)
            key = normalise_phone(lookups[0].sent, TRUNK)
            assert key is not None
            timed.plan = await _plan(session, engine, key.match_key)
    finally:
        await reader.aclose()
        await store_engine.dispose()
    return timed


async def lookup_section(args: argparse.Namespace, work: Path) -> None:
    rng = random.Random(7)
    lookups = make_lookups(args.contacts, args.lookups, rng)
    hits = sum(1 for one in lookups if one.expected)
    print(f"lookup: {args.contacts:,} contacts; {args.lookups:,} lookups on a trunk in 028 with "
          f"outside line 9 ({hits:,} hits, {args.lookups - hits:,} misses or in the bin)")  # fmt: skip
    results: list[Timed] = []
    seeded: list[tuple[str, Seeded]] = []
    for wrong in seeded_keys_disagree(args.contacts, rng):
        print(f"SEEDED WRONGLY: {wrong}")

    url = f"sqlite+aiosqlite:///{work / 'lookup.db'}"
    await upgrade_to_head(url)
    seeded.append(
        ("SQLite", await asyncio.to_thread(seed_sqlite_blocking, work / "lookup.db", args.contacts))
    )
    results.append(await time_lookups(url, "SQLite", lookups))

    try:
        pg = await create_scratch_database(args.pg_url, "rapport_bench")
    except UNREACHABLE as err:
        print(f"PostgreSQL not measured: {err}")
    else:
        try:
            await upgrade_to_head(pg)
            seeded.append(("PostgreSQL", await seed_postgresql(pg, args.contacts)))
            results.append(await time_lookups(pg, "PostgreSQL", lookups))
        finally:
            await drop_scratch_database(args.pg_url, pg)

    for engine, seed in seeded:
        print(f"seeded {engine:<10} {seed.contacts:,} contacts + {seed.identities:,} phone "
              f"identities in {seed.seconds:.1f} s ({seed.contacts / seed.seconds:,.0f} contacts/s)")  # fmt: skip
    print(f"\n{'latency':<48} {'p50 us':>8} {'p99 us':>8} {'goal p99':>9}  {'met':<4} right")
    for t in results:
        goal = GOAL_P99_US[t.engine]
        p99 = _pct_us(t.match_ids, 99)
        print(f"{'phone lookup (PhoneIndexReader), ' + t.engine:<48} {_pct_us(t.match_ids, 50):>8.0f} {p99:>8.0f} "
              f"{goal:>9}  {'yes' if p99 < goal else 'NO':<4} {t.right}/{len(t.match_ids)}")  # fmt: skip
    for t in results:
        print(f"{'  match_ids in an ORM session, ' + t.engine:<48} "
              f"{_pct_us(t.session_ids, 50):>8.0f} {_pct_us(t.session_ids, 99):>8.0f}")  # fmt: skip
    for t in results:
        print(f"{'  floor: driver round trip SELECT 1, ' + t.engine:<48} "
              f"{_pct_us(t.floor, 50):>8.0f} {_pct_us(t.floor, 99):>8.0f}")  # fmt: skip
    for t in results:
        print(f"{'  find_callers (the card), ' + t.engine:<48} "
              f"{_pct_us(t.cards, 50):>8.0f} {_pct_us(t.cards, 99):>8.0f}")  # fmt: skip
    for t in results:
        for wrong in t.wrong:
            print(f"WRONG on {t.engine}: {wrong}")
        print(f"\nmatch_ids plan, {t.engine}:\n  " + "\n  ".join(t.plan))


# All sections -------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[argparse.Namespace, Path], Awaitable[None]]] = {
    "lookup": lookup_section,
}


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="rapport-bench-ami-"))
    try:
        for name in [args.only] if args.only else list(SECTIONS):
            await SECTIONS[name](args, work)
            print()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    parser.add_argument("--contacts", type=int, default=1_000_000, help="lookup: contacts seeded")
    parser.add_argument("--lookups", type=int, default=5_000, help="lookup: lookups timed")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
