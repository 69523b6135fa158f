"""The phone side under load, one section at a time.

Sections (all by default, or one with ``--only NAME``):
  events  Streams every fixture trace's events (50 copies with fresh ids, about
          200,000 events) over a loopback AMI socket to three readers in turn:
          a minimal asyncio ``readuntil`` reader (the ceiling), panoramisk 1.4's
          Manager with a no-op handler, and AmiClient feeding CallCorrelator.
          Goal (phone issue): AmiClient + CallCorrelator >= 0.5 x panoramisk.
  pop     Runs ``rapport run`` (SQLite) against an AMI server and 200 agents'
          websockets; rings 200 calls at once, 5 ms apart, several rounds, and
          times each ring from the DialBegin leaving the AMI server to the
          CallRinging frame at that agent's socket.  Goal: p99 < 50 ms.
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
Run: .venv/bin/python bench/ami.py [--only events|pop|lookup] [--contacts 1000000] [--lookups 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from typing import Any, Self

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


# Section: events -----------------------------------------------------------------------

EVENT_COPIES = 50
EOM = b"\r\n\r\n"


def event_stream(copies: int) -> tuple[bytes, int]:
    """Every fixture trace's events, ``copies`` times over with fresh ids each time."""
    fixtures = ROOT.parent / "shared" / "fixtures" / "ami"
    blocks: list[bytes] = []
    for path in sorted(fixtures.glob("*.ami")):
        meta = json.loads(path.with_suffix(".json").read_text("utf-8"))
        raw = path.read_bytes()
        blocks.append(
            b"".join(
                raw[m["offset"] : m["offset"] + m["length"]]
                for m in meta["messages"]
                if m["kind"] == "event"
            )
        )
    one = b"".join(blocks)
    count = one.count(EOM)
    # Every copy gets its own Uniqueids and Linkedids (all ids there start 17953...).
    stream = b"".join(one.replace(b"17953", b"%05d" % (10000 + k)) for k in range(copies))
    return stream, count * copies


class BenchAmi:
    """A loopback AMI server that answers every action with Success (CoreShowChannels
    with an empty list); ``after(name, writer)`` runs once an action is answered."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                action = await reader.readuntil(EOM)
                fields = dict(
                    line.split(": ", 1) for line in action.decode().split("\r\n") if ": " in line
                )
                name, aid = fields.get("Action", "").lower(), fields.get("ActionID", "")
                if name == "coreshowchannels":
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
                        f"Message: Channels will follow\r\n\r\nEvent: CoreShowChannelsComplete\r\n"
                        f"ActionID: {aid}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                    )
                else:
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nMessage: ok\r\n"
                        f"SystemName: bench\r\n\r\n".encode()
                    )
                await writer.drain()
                self.after(name, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def after(self, action: str, writer: asyncio.StreamWriter) -> None:
        """What the server does once it answered ``action``."""


class StreamServer(BenchAmi):
    """After the login, writes the whole event stream as fast as the socket takes it."""

    def __init__(self, stream: bytes) -> None:
        super().__init__()
        self.stream = stream
        self.sent = False

    def after(self, action: str, writer: asyncio.StreamWriter) -> None:
        if action == "login" and not self.sent:
            self.sent = True
            asyncio.get_running_loop().create_task(self._pour(writer))

    async def _pour(self, writer: asyncio.StreamWriter) -> None:
        # 64 KiB writes cut at message ends, so an answer to an action sent meanwhile
        # falls between two messages, as Asterisk's would.
        start, size = 0, len(self.stream)
        while start < size:
            end = self.stream.find(EOM, min(start + 65536, size - 4)) + 4
            writer.write(self.stream[start:end])
            start = end
            await writer.drain()


async def _bare_reader(port: int, total: int) -> float:
    """The ceiling: read messages with readuntil and count them, nothing else."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"Action: Login\r\nActionID: 1\r\nUsername: u\r\nSecret: s\r\n\r\n")
    await reader.readuntil(EOM)
    started = time.perf_counter()
    seen = 0
    while seen < total:
        await reader.readuntil(EOM)
        seen += 1
    elapsed = time.perf_counter() - started
    writer.close()
    return total / elapsed


async def _panoramisk(port: int, total: int) -> float:
    from panoramisk import Manager

    done = asyncio.get_running_loop().create_future()
    seen = 0
    started = 0.0

    def on_event(manager: object, message: object) -> None:
        nonlocal seen, started
        if seen == 0:
            started = time.perf_counter()
        seen += 1
        if seen == total and not done.done():
            done.set_result(time.perf_counter())

    manager = Manager(host="127.0.0.1", port=port, username="u", secret="s", ping_delay=3600)
    manager.register_event("*", on_event)
    await manager.connect()
    end = await asyncio.wait_for(done, 300)
    manager.close()
    return (total - 1) / (end - started)


async def _rapport(port: int, total: int) -> tuple[float, int]:
    from asterisk.client import AmiClient, AmiSettings
    from asterisk.correlator import CallCorrelator
    from asterisk.plan import ChannelPlan
    from store.phones import PhoneRegion

    done = asyncio.get_running_loop().create_future()
    calls = 0
    seen = 0
    started = 0.0

    def on_update(update: str, call: object, segment: object) -> None:
        nonlocal calls
        if update == "ended":
            calls += 1

    correlator = CallCorrelator(ChannelPlan(region=PhoneRegion("CN", "028")), on_update)
    feed = correlator.feed

    def on_event(message: Any, received_at: float) -> None:
        nonlocal seen, started
        if seen == 0:
            started = time.perf_counter()
        feed(message, received_at)
        seen += 1
        if seen == total and not done.done():
            done.set_result(time.perf_counter())

    class _Status:
        def ready(self, detail: str = "") -> None: ...
        def progress(self, detail: str) -> None: ...
        def degraded(self, detail: str) -> None: ...

    settings = AmiSettings(name="bench", host="127.0.0.1", port=port, username="u",
                           secret="s", ping_interval=3600, ping_timeout=3600)  # fmt: skip
    client = AmiClient(settings, on_event)
    task = asyncio.create_task(client.run(_Status()))
    end = await asyncio.wait_for(done, 300)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return (total - 1) / (end - started), calls


async def events_section(args: argparse.Namespace, work: Path) -> None:
    stream, total = event_stream(args.event_copies)
    results: dict[str, list[float]] = {"bare": [], "panoramisk": [], "rapport": []}
    calls = 0
    for _ in range(args.rounds):  # take turns, report medians: this machine is noisy
        for name in results:
            async with StreamServer(stream) as server:
                if name == "bare":
                    rate = await _bare_reader(server.port, total)
                elif name == "panoramisk":
                    rate = await _panoramisk(server.port, total)
                else:
                    rate, calls = await _rapport(server.port, total)
            results[name].append(rate)
    bare, pano, ours = (statistics.median(results[k]) for k in ("bare", "panoramisk", "rapport"))
    print(
        f"\nevents/s over a loopback AMI socket: {total:,} events "
        f"({args.event_copies} copies of the fixture traces), median of {args.rounds} rounds"
    )
    print(f"{'reader':<44}{'events/s':>12}{'vs panoramisk':>15}")
    for label, rate in (
        ("minimal asyncio readuntil reader (ceiling)", bare),
        ("panoramisk 1.4 Manager, no-op handler", pano),
        ("AmiClient + CallCorrelator", ours),
    ):
        print(f"{label:<44}{rate:>12,.0f}{rate / pano:>14.2f}x")
    verdict = "met" if ours / pano >= 0.5 else "NOT met"
    print(
        f"goal: AmiClient + CallCorrelator >= 0.5x panoramisk: {ours / pano:.2f}x, {verdict}"
        f" ({calls:,} calls correlated)"
    )


# Section: pop ------------------------------------------------------------------------------

POP_AGENTS = 200
POP_GOAL_P99_MS = 50.0


class BurstServer(BenchAmi):
    """Rings calls when told: each ring is Newchannel (trunk), Newchannel (agent
    phone), DialBegin; it notes when each DialBegin left."""

    def __init__(self) -> None:
        super().__init__()
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()
        self.sent: dict[str, float] = {}

    def after(self, action: str, writer: asyncio.StreamWriter) -> None:
        if action == "coreshowchannels":  # the client rebuilt its state: calls may come
            self.writer = writer
            self.ready.set()

    async def ring(self, call: int, ext: str, number: str) -> str:
        assert self.writer is not None
        trunk, agent = f"1800000000.{2 * call}", f"1800000000.{2 * call + 1}"
        tname, aname = f"PJSIP/trunk-{call:08x}", f"PJSIP/{ext}-{call:08x}"
        self.writer.write(
            f"Event: Newchannel\r\nChannel: {tname}\r\nChannelState: 4\r\n"
            f"ChannelStateDesc: Ring\r\nCallerIDNum: {number}\r\nCallerIDName: <unknown>\r\n"
            f"Exten: 02885550100\r\nContext: from-pstn\r\nUniqueid: {trunk}\r\n"
            f"Linkedid: {trunk}\r\n\r\n"
            f"Event: Newchannel\r\nChannel: {aname}\r\nChannelState: 0\r\n"
            f"ChannelStateDesc: Down\r\nCallerIDNum: {ext}\r\nExten: {ext}\r\n"
            f"Context: phones\r\nUniqueid: {agent}\r\nLinkedid: {trunk}\r\n\r\n"
            f"Event: DialBegin\r\nChannel: {tname}\r\nUniqueid: {trunk}\r\nLinkedid: {trunk}\r\n"
            f"CallerIDNum: {number}\r\nDestChannel: {aname}\r\nDestUniqueid: {agent}\r\n"
            f"DestLinkedid: {trunk}\r\nDestCallerIDNum: {ext}\r\nDialString: {ext}\r\n\r\n".encode()
        )
        await self.writer.drain()
        self.sent[trunk] = time.perf_counter()
        return trunk

    async def hang_up(self, call: int, ext: str) -> None:
        assert self.writer is not None
        trunk, agent = f"1800000000.{2 * call}", f"1800000000.{2 * call + 1}"
        for name, uid in ((f"PJSIP/{ext}-{call:08x}", agent), (f"PJSIP/trunk-{call:08x}", trunk)):
            self.writer.write(
                f"Event: Hangup\r\nChannel: {name}\r\nUniqueid: {uid}\r\nLinkedid: {trunk}\r\n"
                f"Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n".encode()
            )
        await self.writer.drain()


def _pop_config(work: Path, ami_port: int, web_port: int, tracking_port: int) -> Path:
    extensions = ", ".join(f'"{2001 + i}" = "agent{i:03d}"' for i in range(POP_AGENTS))
    path = work / "pop.toml"
    path.write_text(
        f"""
[store]
url = "sqlite+aiosqlite:///{work / "pop.db"}"
blob_dir = "{work / "blobs"}"
[daemon]
var_dir = "{work / "var"}"
[web]
port = {web_port}
[tracking]
port = {tracking_port}
[smtp_ingress]
enabled = false
[log]
level = "WARNING"
[[asterisk.pbx]]
name = "bench"
host = "127.0.0.1"
port = {ami_port}
security = "plain"
username = "crm"
secret = "bench-secret"
area_code = "028"
extensions = {{ {extensions} }}
""",
        encoding="utf-8",
    )
    return path


async def _pop_seed(url: str) -> list[str]:
    """The agents and their API tokens, and a contact for every other caller."""
    from store.api_tokens import create_api_token
    from store.db import open_store
    from store.identity import index_record
    from store.models import Contact
    from store.users import create_user

    await upgrade_to_head(url)
    tokens = []
    async with open_store(url, tempfile.mkdtemp()) as store:
        async with store.session() as session, session.begin():
            for i in range(POP_AGENTS):
                await create_user(session, f"agent{i:03d}", None)
                tokens.append(await create_api_token(session, f"agent{i:03d}", "bench"))
            for i in range(0, POP_AGENTS * 5, 2):
                contact = Contact(first_name=f"客户{i}", mobile=f"1390000{i:04d}")
                session.add(contact)
                await session.flush()
                await index_record(session, contact)
    return tokens


async def pop_section(args: argparse.Namespace, work: Path) -> None:
    import aiohttp

    from tests.peers.local import free_port

    url = f"sqlite+aiosqlite:///{work / 'pop.db'}"
    tokens = await _pop_seed(url)
    web_port, tracking_port = free_port(), free_port()
    latencies: list[float] = []
    async with BurstServer() as ami:
        config = _pop_config(work, ami.port, web_port, tracking_port)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "--config", str(config), "run",
            env={**os.environ, "RAPPORT_ADMIN_PASSWORD": "bench-admin-password"},
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.wait_for(ami.ready.wait(), 60)
            # Websockets hold their connections: no pool limit (aiohttp's default is 100).
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                sockets = []
                for token in tokens:
                    ws = await http.ws_connect(f"http://127.0.0.1:{web_port}/ws/phone")
                    await ws.send_json({"type": "auth", "token": token})
                    assert (await ws.receive_json(timeout=10))["type"] == "ready"
                    sockets.append(ws)
                arrived: dict[str, float] = {}
                all_in = asyncio.Event()

                async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
                    async for frame in ws:
                        data = json.loads(frame.data)
                        if data.get("type") == "CallRinging":
                            arrived[data["call"]] = time.perf_counter()
                            if len(arrived) == len(ami.sent):
                                all_in.set()

                listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
                call = 0
                for _ in range(args.pop_rounds):
                    all_in.clear()
                    first = call
                    for i in range(POP_AGENTS):  # 200 calls ringing at once, 5 ms apart
                        await ami.ring(call, str(2001 + i), f"1390000{(call % 1000):04d}")
                        call += 1
                        await asyncio.sleep(args.pop_spacing)
                    await asyncio.wait_for(all_in.wait(), 30)
                    for n in range(first, call):
                        await ami.hang_up(n, str(2001 + (n - first)))
                    await asyncio.sleep(0.5)
                latencies = [arrived[uid] - sent for uid, sent in ami.sent.items()]
                for task in listeners:
                    task.cancel()
                for ws in sockets:
                    await ws.close()
        finally:
            daemon.terminate()
            await daemon.wait()
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    print(
        f"screen-pop: {POP_AGENTS} agents on websockets, {POP_AGENTS} calls ringing at once "
        f"({args.pop_spacing * 1000:.0f} ms apart) x {args.pop_rounds} rounds = {len(latencies)} "
        f"rings; from the DialBegin leaving the AMI server to the CallRinging frame at the "
        f"agent's socket, through `rapport run` (SQLite)"
    )
    print(f"{'':<30}{'p50 ms':>8}{'p99 ms':>8}{'goal p99':>10}  met")
    print(
        f"{'ring to websocket frame':<30}{p50:>8.1f}{p99:>8.1f}{POP_GOAL_P99_MS:>10.0f}  "
        f"{'yes' if p99 < POP_GOAL_P99_MS else 'NO'}"
    )


# All sections -------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[argparse.Namespace, Path], Awaitable[None]]] = {
    "events": events_section,
    "pop": pop_section,
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
    parser.add_argument("--event-copies", type=int, default=50,
                        help="events: copies of the fixture traces streamed")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="events: rounds, medians reported")
    parser.add_argument("--pop-rounds", type=int, default=5, help="pop: bursts of 200 rings")
    parser.add_argument("--pop-spacing", type=float, default=0.005,
                        help="pop: seconds between rings in a burst")  # fmt: skip
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
