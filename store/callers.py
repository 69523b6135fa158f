"""Who is calling: the records a caller's number belongs to, and the card an agent sees.

``match_ids`` is the fast path run for every call: one indexed query on the
phone identity index.  ``find_callers`` builds the screen-pop card with a fixed
number of queries however many records match (the match, then one each for
accounts, owners, open opportunities, and recent activities with open tasks).  Numbers are
matched on the whole key ``store.phones`` makes, never on the last N digits;
every live record that holds the number is a match, so an ambiguous number is
shown as such and never silently resolved to one record.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Dialect,
    Select,
    and_,
    bindparam,
    false,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from store.errors import TransientError
from store.models.activity import Activity, ActivityKind, ActivityLink, ActivityStatus
from store.models.admin import User
from store.models.crm import (
    Account,
    AccountContact,
    Contact,
    Lead,
    Opportunity,
    PipelineStage,
    person_name,
)
from store.models.identity import PhoneIdentity
from store.phones import PhoneKey, PhoneRegion, normalise_phone

RecordRef = tuple[str, int]

# The records whose numbers are indexed (``store.identity.PHONE_FIELDS``), in card order.
CALLER_RECORDS: dict[str, type[Contact] | type[Lead] | type[Account]] = {
    "contact": Contact,
    "lead": Lead,
    "account": Account,
}
RECENT_ACTIVITIES = 5
OPEN_TASKS = 5
# SQLite refuses a compound SELECT of more than 500 parts (SQLITE_MAX_COMPOUND_SELECT);
# each record is two parts (its recent activities, its open tasks).
_UNION_CHUNK = 250
_RECORDS_PER_QUERY = _UNION_CHUNK // 2


@dataclass(frozen=True)
class AccountRef:
    id: int
    name: str


@dataclass(frozen=True)
class OwnerRef:
    id: int
    display_name: str


@dataclass(frozen=True)
class OpenOpportunity:
    id: int
    name: str
    stage: str
    amount: Decimal | None
    currency: str


@dataclass(frozen=True)
class RecentActivity:
    id: int
    kind: str
    subject: str
    occurred_at: dt.datetime


@dataclass(frozen=True)
class OpenTask:
    """A planned task linked to the record: what the agent promised this caller."""

    id: int
    subject: str
    due_at: dt.datetime | None


@dataclass(frozen=True)
class CallerMatch:
    """One record the caller's number belongs to, with what an agent needs before answering."""

    record_type: str  # "contact", "lead" or "account"
    record_id: int
    name: str
    # A contact's primary (else first) account, a converted lead's account; None for an account.
    account: AccountRef | None
    owner: OwnerRef | None
    # Not won or lost: a contact's own and its account's, an account's, a converted lead's.
    open_opportunities: tuple[OpenOpportunity, ...]
    # Tickets do not exist yet; the field is here so the card's shape does not change.
    open_tickets: tuple[object, ...]
    last_activities: tuple[RecentActivity, ...]  # newest first, at most RECENT_ACTIVITIES
    # Planned tasks, soonest due first (undated last), at most OPEN_TASKS.
    open_tasks: tuple[OpenTask, ...] = ()


@dataclass(frozen=True)
class CallerLookup:
    """Everyone a caller's number belongs to; ``number`` is None for a withheld number."""

    number: PhoneKey | None
    matches: tuple[CallerMatch, ...]

    @property
    def unknown(self) -> bool:
        return not self.matches

    @property
    def ambiguous(self) -> bool:
        """More than one person or company holds the number.

        A contact and the account it is shown at (a switchboard number on both)
        are one caller; two contacts, or a contact and some other account, are not.
        """
        people = [m for m in self.matches if m.record_type != "account"]
        companies = [m.record_id for m in self.matches if m.record_type == "account"]
        if len(people) > 1 or len(companies) > 1:
            return True
        if people and companies:
            account = people[0].account
            return account is None or account.id != companies[0]
        return False


def _live_matches(*columns: Any) -> Select[Any]:
    """Identity rows with ``match_key`` whose record is not in the recycle bin.

    One probe of the (match_key, record_type, record_id) unique index, then a
    primary-key probe per row into its record's table.
    """
    identity = PhoneIdentity
    query = select(identity.record_type, identity.record_id, *columns).select_from(identity)
    alive: list[ColumnElement[bool]] = []
    for record_type, model in CALLER_RECORDS.items():
        is_type = identity.record_type == record_type
        query = query.outerjoin(model, and_(is_type, model.id == identity.record_id))
        alive.append(and_(is_type, model.id.is_not(None), model.deleted_at.is_(None)))
    return query.where(identity.match_key == bindparam("match_key"), or_(*alive))


# Built once: the hot path only binds ``match_key`` (bench/ami.py prints its plans).
MATCH_IDS_QUERY = _live_matches()
_MATCH_CARDS = _live_matches(
    Contact.first_name.label("contact_first"), Contact.last_name.label("contact_last"),
    Contact.owner_id.label("contact_owner"),
    Lead.first_name.label("lead_first"), Lead.last_name.label("lead_last"), Lead.company,
    Lead.email, Lead.owner_id.label("lead_owner"), Lead.converted_account_id,
    Lead.converted_opportunity_id,
    Account.name.label("account_name"), Account.owner_id.label("account_owner"),
)  # fmt: skip


def _ordered(refs: Iterable[RecordRef]) -> list[RecordRef]:
    order = list(CALLER_RECORDS)
    return sorted(refs, key=lambda ref: (order.index(ref[0]), ref[1]))


async def match_ids(
    session: AsyncSession, number: str | None, region: PhoneRegion
) -> list[RecordRef]:
    """(record type, id) of every live record holding ``number``: contacts, leads, accounts.

    Run for every call, so it goes to the driver directly: through the ORM and the
    async adapters the same query costs about three times as much on SQLite
    (bench/ami.py).  It runs on the session's connection, in its transaction,
    after flushing what the session holds, as the ORM would.  A database failure
    is a ``TransientError`` (retry the lookup, or ring the call through unknown).
    """
    key = normalise_phone(number, region)
    if key is None:
        return []
    if session.autoflush and (session.new or session.dirty or session.deleted):
        await session.flush()
    try:
        rows = await _fetch_match_ids(session, key.match_key)
    except (SQLAlchemyError, sqlite3.Error, asyncpg.PostgresError, OSError) as err:
        raise TransientError(f"caller lookup failed: {type(err).__name__}") from err
    return _ordered((record_type, record_id) for record_type, record_id in rows)


async def _fetch_match_ids(session: AsyncSession, match_key: str) -> Iterable[Any]:
    connection = await session.connection()
    dialect = connection.dialect
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is not None and (dialect.name, dialect.driver) == ("sqlite", "aiosqlite"):
        query = _driver_query(dialect)
        rows: Iterable[Any] = await driver.execute_fetchall(query.sql, query.bind(match_key))
    elif driver is not None and (dialect.name, dialect.driver) == ("postgresql", "asyncpg"):
        query = _driver_query(dialect)
        rows = await driver.fetch(query.sql, *query.bind(match_key))
    else:
        rows = await connection.execute(MATCH_IDS_QUERY, {"match_key": match_key})
    return rows


@dataclass(frozen=True)
class _DriverQuery:
    """``MATCH_IDS_QUERY`` as one engine's driver takes it: SQL text and positional parameters."""

    sql: str
    names: tuple[str, ...]
    constants: dict[str, Any]

    def bind(self, match_key: str) -> tuple[Any, ...]:
        return tuple(match_key if n == "match_key" else self.constants[n] for n in self.names)


_DRIVER_QUERIES: dict[tuple[str, str], _DriverQuery] = {}


def _driver_query(dialect: Dialect) -> _DriverQuery:
    found = _DRIVER_QUERIES.get((dialect.name, dialect.driver))
    if found is None:
        compiled = MATCH_IDS_QUERY.compile(dialect=dialect)
        found = _DriverQuery(str(compiled), tuple(compiled.positiontup or ()), compiled.params)
        _DRIVER_QUERIES[(dialect.name, dialect.driver)] = found
    return found


@dataclass
class _Found:
    """One matched record while its card is assembled."""

    ref: RecordRef
    name: str
    owner_id: int | None
    account_id: int | None = None  # the converted lead's account, until accounts are read
    opportunity_id: int | None = None  # the converted lead's deal
    account: AccountRef | None = None


def _found(row: Any) -> _Found:
    ref: RecordRef = (row.record_type, row.record_id)
    if ref[0] == "contact":
        return _Found(ref, person_name(row.contact_first, row.contact_last), row.contact_owner)
    if ref[0] == "lead":
        name = person_name(row.lead_first, row.lead_last) or row.company or row.email or ""
        return _Found(
            ref, name, row.lead_owner, row.converted_account_id, row.converted_opportunity_id
        )
    return _Found(ref, row.account_name, row.account_owner)


async def find_callers(
    session: AsyncSession, number: str | None, region: PhoneRegion
) -> CallerLookup:
    """The caller card: every live record holding ``number``, with account, owner and history.

    ``region`` is the trunk's (country, area code, outside-line digit): a PBX
    sends numbers as its trunk sees them.  Anonymous, ``<unknown>`` and empty
    numbers are unknown callers and cost no query.  A database failure is a
    ``TransientError``, as in ``match_ids``.
    """
    key = normalise_phone(number, region)
    if key is None:
        return CallerLookup(None, ())
    try:
        return CallerLookup(key, await _cards(session, key.match_key))
    except SQLAlchemyError as err:
        raise TransientError(f"caller lookup failed: {type(err).__name__}") from err


async def _cards(session: AsyncSession, match_key: str) -> tuple[CallerMatch, ...]:
    rows = (await session.execute(_MATCH_CARDS, {"match_key": match_key})).all()
    by_ref = {(row.record_type, row.record_id): _found(row) for row in rows}
    found = [by_ref[ref] for ref in _ordered(by_ref)]
    if not found:
        return ()
    await _read_accounts(session, found)
    owners = await _read_owners(session, {f.owner_id for f in found if f.owner_id is not None})
    deals = await _read_open_opportunities(session, found)
    recent, tasks = await _read_history(session, [f.ref for f in found])
    return tuple(
        CallerMatch(
            record_type=f.ref[0],
            record_id=f.ref[1],
            name=f.name,
            account=f.account,
            owner=owners.get(f.owner_id) if f.owner_id is not None else None,
            open_opportunities=deals.get(f.ref, ()),
            open_tickets=(),
            last_activities=recent.get(f.ref, ()),
            open_tasks=tasks.get(f.ref, ()),
        )
        for f in found
    )


async def _read_accounts(session: AsyncSession, found: Sequence[_Found]) -> None:
    """Set each contact's primary (else first) live account and each converted lead's."""
    contact_ids = [f.ref[1] for f in found if f.ref[0] == "contact"]
    lead_account_ids = {f.account_id for f in found if f.account_id is not None}
    if not contact_ids and not lead_account_ids:
        return
    parts: list[Select[*tuple[Any, ...]]] = []
    if contact_ids:
        parts.append(
            select(AccountContact.contact_id, AccountContact.is_primary, Account.id, Account.name)
            .join(Account, Account.id == AccountContact.account_id)
            .where(AccountContact.contact_id.in_(contact_ids), Account.deleted_at.is_(None))
        )
    if lead_account_ids:
        no_contact, not_primary = null().label("contact_id"), false().label("is_primary")
        parts.append(
            select(no_contact, not_primary, Account.id, Account.name).where(
                Account.id.in_(lead_account_ids), Account.deleted_at.is_(None)
            )
        )
    query = parts[0] if len(parts) == 1 else union_all(*parts)
    of_contact: dict[int, tuple[bool, int, str]] = {}
    named: dict[int, str] = {}
    for contact_id, is_primary, account_id, name in await session.execute(query):
        named[account_id] = name
        if contact_id is None:
            continue
        best = of_contact.get(contact_id)
        # Primary first, then the oldest link (lowest account id), whatever the row order.
        if best is None or (not is_primary, account_id) < (not best[0], best[1]):
            of_contact[contact_id] = (bool(is_primary), account_id, name)
    for f in found:
        if f.ref[0] == "contact" and f.ref[1] in of_contact:
            _, account_id, name = of_contact[f.ref[1]]
            f.account = AccountRef(account_id, name)
        elif f.ref[0] == "lead" and f.account_id in named:
            f.account = AccountRef(f.account_id, named[f.account_id])


async def _read_owners(session: AsyncSession, user_ids: set[int]) -> dict[int, OwnerRef]:
    if not user_ids:
        return {}
    rows = await session.execute(
        select(User.id, User.display_name, User.username).where(User.id.in_(user_ids))
    )
    return {uid: OwnerRef(uid, display or username) for uid, display, username in rows}


async def _read_open_opportunities(
    session: AsyncSession, found: Sequence[_Found]
) -> dict[RecordRef, tuple[OpenOpportunity, ...]]:
    """Each match's deals in a stage that is neither won nor lost, newest first."""
    contact_ids = {f.ref[1] for f in found if f.ref[0] == "contact"}
    account_ids = {f.ref[1] for f in found if f.ref[0] == "account"}
    account_ids |= {f.account.id for f in found if f.ref[0] == "contact" and f.account}
    deal_ids = {f.opportunity_id for f in found if f.opportunity_id is not None}
    terms: list[ColumnElement[bool]] = []
    for column, ids in (
        (Opportunity.contact_id, contact_ids),
        (Opportunity.account_id, account_ids),
        (Opportunity.id, deal_ids),
    ):
        if ids:
            terms.append(column.in_(ids))
    if not terms:
        return {}
    rows = await session.execute(
        select(
            Opportunity.id, Opportunity.name, PipelineStage.name, Opportunity.amount,
            Opportunity.currency, Opportunity.contact_id, Opportunity.account_id,
        )
        .join(PipelineStage, PipelineStage.id == Opportunity.stage_id)
        .where(
            or_(*terms), Opportunity.deleted_at.is_(None),
            PipelineStage.is_won.is_(False), PipelineStage.is_lost.is_(False),
        )
        .order_by(Opportunity.id.desc())
    )  # fmt: skip
    deals: dict[RecordRef, list[OpenOpportunity]] = {f.ref: [] for f in found}
    for deal_id, name, stage, amount, currency, contact_id, account_id in rows:
        deal = OpenOpportunity(deal_id, name, stage, amount, currency)
        for f in found:
            kind, record_id = f.ref
            if (
                (kind == "contact" and record_id == contact_id)
                or (kind == "contact" and f.account is not None and f.account.id == account_id)
                or (kind == "account" and record_id == account_id)
                or (kind == "lead" and f.opportunity_id == deal_id)
            ):
                deals[f.ref].append(deal)
    return {ref: tuple(each) for ref, each in deals.items()}


async def _read_history(
    session: AsyncSession, refs: Sequence[RecordRef]
) -> tuple[dict[RecordRef, tuple[RecentActivity, ...]], dict[RecordRef, tuple[OpenTask, ...]]]:
    """Each record's newest live activities (as ``store.activities.timeline`` orders them)
    and its open tasks (planned, soonest due first), in one query.

    Two branches per record, each a scan of the record's range of the timeline
    index: the recent branch stops after a few rows; the task branch keeps the
    record's planned tasks, so it reads the record's links and probes each
    activity by primary key.  A number held by more than ``_RECORDS_PER_QUERY``
    records takes one query per chunk.
    """
    recent: dict[RecordRef, list[RecentActivity]] = {ref: [] for ref in refs}
    tasks: dict[RecordRef, list[OpenTask]] = {ref: [] for ref in refs}
    for start in range(0, len(refs), _RECORDS_PER_QUERY):
        branches = []
        for record_type, record_id in refs[start : start + _RECORDS_PER_QUERY]:
            linked = (
                select(ActivityLink.record_type, ActivityLink.record_id, Activity.id,
                       Activity.kind, Activity.subject)
                .join(ActivityLink, ActivityLink.activity_id == Activity.id)
                .where(ActivityLink.record_type == record_type,
                       ActivityLink.record_id == record_id, Activity.deleted_at.is_(None))
            )  # fmt: skip
            branches.append(
                linked.add_columns(literal("recent").label("part"), ActivityLink.occurred_at)
                .order_by(ActivityLink.occurred_at.desc(), Activity.id.desc())
                .limit(RECENT_ACTIVITIES)
                .subquery()
                .select()
            )
            branches.append(
                linked.add_columns(literal("task").label("part"), Activity.due_at)
                .where(Activity.kind == ActivityKind.TASK,
                       Activity.status == ActivityStatus.PLANNED)
                .order_by(Activity.due_at.is_(None), Activity.due_at, Activity.id)
                .limit(OPEN_TASKS)
                .subquery()
                .select()
            )  # fmt: skip
        query = union_all(*branches)
        for record_type, record_id, activity_id, kind, subject, part, at in await session.execute(
            query
        ):
            ref = (record_type, record_id)
            if part == "task":
                tasks[ref].append(OpenTask(activity_id, subject, at))
            else:
                recent[ref].append(RecentActivity(activity_id, str(kind), subject, at))
    for each in recent.values():
        each.sort(key=lambda a: (a.occurred_at, a.id), reverse=True)
    for due in tasks.values():
        due.sort(key=lambda task: (task.due_at is None, task.due_at or dt.datetime.min, task.id))
    return (
        {ref: tuple(each) for ref, each in recent.items()},
        {ref: tuple(each) for ref, each in tasks.items()},
    )


class PhoneIndexReader:
    """``match_ids`` for every ringing call, on the engine's fastest path.

    A session's query pays for a pool check-out, a transaction and, on SQLite,
    a hop to aiosqlite's worker thread and back: more than the lookup itself.
    This keeps a connection of its own that reads outside any transaction: on
    SQLite a read-only ``sqlite3`` connection queried on the event loop (a point
    lookup on a covering index: tens of microseconds), on PostgreSQL an
    autocommit connection queried through its driver.  The query is
    ``MATCH_IDS_QUERY``, compiled by SQLAlchemy for the engine.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite: sqlite3.Connection | None = None
        self._pg: AsyncConnection | None = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database or "").resolve()
            self._sqlite = sqlite3.connect(
                f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            self._sqlite.execute("PRAGMA query_only = 1")
        self._query = _driver_query(engine.dialect)

    async def match_ids(self, number: str | None, region: PhoneRegion) -> list[RecordRef]:
        key = normalise_phone(number, region)
        if key is None:
            return []
        bound = self._query.bind(key.match_key)
        try:
            if self._sqlite is not None:
                found: Iterable[Any] = self._sqlite.execute(self._query.sql, bound).fetchall()
            else:
                found = await self._fetch(bound)
        except (SQLAlchemyError, sqlite3.Error, asyncpg.PostgresError, OSError) as err:
            await self._drop()
            raise TransientError(f"caller lookup failed: {type(err).__name__}") from err
        return _ordered((record_type, record_id) for record_type, record_id in found)

    async def _fetch(self, bound: tuple[Any, ...]) -> Iterable[Any]:
        if self._pg is None:
            connection = await self._engine.connect()
            self._pg = await connection.execution_options(isolation_level="AUTOCOMMIT")
        raw = (await self._pg.get_raw_connection()).driver_connection
        if isinstance(raw, asyncpg.Connection):
            rows: Iterable[Any] = await raw.fetch(self._query.sql, *bound)
            return rows
        result = await self._pg.execute(MATCH_IDS_QUERY, {"match_key": bound[0]})
        return list(result.all())

    async def _drop(self) -> None:
        if self._pg is not None:
            pg, self._pg = self._pg, None
            await pg.close()

    async def aclose(self) -> None:
        await self._drop()
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
