"""Caller lookup on both engines: the whole number in every shape a Chinese PBX sends it.

Properties (hypothesis) check that any way of writing a valid Chinese mobile or
landline reduces to one key and is found; the examples pin down the card, the
ambiguity and what is never a match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import phonenumbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity
from store.callers import (
    AccountRef,
    CallerLookup,
    OpenTask,
    OwnerRef,
    PhoneIndexReader,
    RecentActivity,
    find_callers,
    match_ids,
)
from store.db import Store
from store.identity import index_record
from store.models import (
    Account,
    AccountContact,
    Activity,
    Contact,
    Lead,
    Opportunity,
    PipelineStage,
    User,
)
from store.phones import PhoneRegion, normalise_phone
from store.recycle import restore, soft_delete

# A Chengdu trunk: local numbers come without 028, outside line on 9.
CHENGDU = PhoneRegion(country="CN", area_code="028", outside_prefix="9")
BEIJING = PhoneRegion(country="CN", area_code="010")
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


async def add(session: AsyncSession, *records: Contact | Lead | Account) -> None:
    session.add_all(records)
    await session.flush()
    for record in records:
        await index_record(session, record)


async def ids(
    session: AsyncSession, number: str | None, region: PhoneRegion = CHENGDU
) -> list[tuple[str, int]]:
    return await match_ids(session, number, region)


@contextmanager
def counting_statements(session: AsyncSession) -> Iterator[list[str]]:
    """The SQL statements the session's engine runs inside the block."""
    seen: list[str] = []
    engine = session.get_bind()

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


# The examples ---------------------------------------------------------------------------


async def test_a_mobile_is_found_however_the_pbx_sends_it(session: AsyncSession) -> None:
    zhang = Contact(first_name="伟", last_name="张", mobile="138 1234 5678")
    await add(session, zhang)
    for sent in [
        "+8613812345678", "008613812345678", "8613812345678", "013812345678",
        "1795113812345678", "12593 013812345678", "９13812345678", "913812345678",
        "１３８１２３４５６７８", "138-1234-5678", "(+86) 138 1234 5678",
    ]:  # fmt: skip
        assert await ids(session, sent) == [("contact", zhang.id)], sent
        lookup = await find_callers(session, sent, CHENGDU)
        assert [(m.record_type, m.record_id, m.name) for m in lookup.matches] == [
            ("contact", zhang.id, "张伟")
        ], sent
        assert lookup.number is not None and lookup.number.match_key == "+8613812345678"


async def test_landlines_take_the_trunk_area_code_and_extensions_are_ignored(
    session: AsyncSession,
) -> None:
    shop = Contact(first_name="芳", last_name="王", phone="(028) 8765-4321")
    office = Contact(first_name="强", last_name="刘", phone="010-62345678转8001")
    await add(session, shop, office)
    for sent in ["87654321", "02887654321", "987654321", "+86 28 8765 4321", "8602887654321"]:
        assert await ids(session, sent) == [("contact", shop.id)], sent
    # The same local digits on a Beijing trunk are another number.
    assert await ids(session, "87654321", BEIJING) == []
    for sent in ["01062345678", "+861062345678", "010-62345678 ext. 12"]:
        assert await ids(session, sent) == [("contact", office.id)], sent
    assert await ids(session, "62345678", BEIJING) == [("contact", office.id)]


async def test_service_numbers_match_only_exactly(session: AsyncSession) -> None:
    mobile = Contact(last_name="中国移动", phone="10086")
    bank = Account(name="工商银行", phone="95588")
    await add(session, mobile, bank)
    assert await ids(session, "10086") == [("contact", mobile.id)]
    assert await ids(session, "910086") == [("contact", mobile.id)]  # behind the outside line
    # 95588 starts with the outside-line digit but is a number of its own.
    assert await ids(session, "95588") == [("account", bank.id)]
    assert await ids(session, "995588") == [("account", bank.id)]
    for other in ["1008", "100860", "010086", "8610086", "+8610086", "5588", "955880"]:
        assert await ids(session, other) == [], other


async def test_a_shared_number_gives_every_owner_never_one(session: AsyncSession) -> None:
    husband = Contact(first_name="明", last_name="陈", mobile="13912345678")
    wife = Contact(first_name="丽", last_name="陈", phone="+86 139 1234 5678")
    await add(session, husband, wife)
    assert await ids(session, "013912345678") == [("contact", husband.id), ("contact", wife.id)]
    lookup = await find_callers(session, "013912345678", CHENGDU)
    assert [m.record_id for m in lookup.matches] == [husband.id, wife.id]
    assert lookup.ambiguous and not lookup.unknown


async def test_the_same_last_digits_are_not_the_same_number(session: AsyncSession) -> None:
    await add(
        session,
        Contact(last_name="A", mobile="13812345678"),
        Contact(last_name="B", phone="028-87654321"),
    )
    for sent in ["13912345678", "15812345678", "+8618812345678", "12345678", "01087654321",
                 "+85287654321", "075587654321", "+862187654321"]:  # fmt: skip
        assert await ids(session, sent) == [], sent


async def test_records_in_the_bin_are_not_callers(session: AsyncSession) -> None:
    gone = Contact(last_name="Gone", mobile="13700001111")
    lead = Lead(last_name="Lead", mobile="13700001111")
    await add(session, gone, lead)
    await soft_delete(session, "contact", gone.id, None)
    assert await ids(session, "13700001111") == [("lead", lead.id)]
    lookup = await find_callers(session, "13700001111", CHENGDU)
    assert [(m.record_type, m.record_id) for m in lookup.matches] == [("lead", lead.id)]
    # A change the session has not flushed yet counts too.
    lead.deleted_at = T0
    assert await ids(session, "13700001111") == []
    assert (await find_callers(session, "13700001111", CHENGDU)).unknown
    await restore(session, "contact", gone.id)
    assert await ids(session, "13700001111") == [("contact", gone.id)]


async def test_withheld_numbers_are_unknown_without_a_query(session: AsyncSession) -> None:
    for sent in [None, "", "Anonymous", "anonymous", "<unknown>", "Restricted", " - "]:
        with counting_statements(session) as statements:
            lookup = await find_callers(session, sent, CHENGDU)
            assert await ids(session, sent) == []
        assert lookup == CallerLookup(None, ()), sent
        assert lookup.unknown and not lookup.ambiguous
        assert statements == [], sent
    # A number nobody holds is unknown too, but it was looked up.
    lookup = await find_callers(session, "13600000000", CHENGDU)
    assert lookup.unknown and lookup.number is not None and lookup.matches == ()


async def _stage(session: AsyncSession, name: str) -> PipelineStage:
    stage = await session.scalar(select(PipelineStage).where(PipelineStage.name == name))
    assert stage is not None
    return stage


async def test_the_card_shows_account_owner_open_deals_and_recent_history(
    session: AsyncSession,
) -> None:
    agent = User(username="li.na", display_name="李娜")
    session.add(agent)
    await session.flush()
    old_firm = Account(name="旧公司")
    firm = Account(name="成都贸易有限公司", phone="028-8765 4321", owner_id=agent.id)
    contact = Contact(first_name="伟", last_name="张", phone="(028) 8765-4321", owner_id=agent.id)
    await add(session, old_firm, firm, contact)
    session.add_all([
        AccountContact(account_id=old_firm.id, contact_id=contact.id),
        AccountContact(account_id=firm.id, contact_id=contact.id, is_primary=True),
    ])  # fmt: skip
    stage = {
        n: (await _stage(session, n)).id
        for n in ("Prospecting", "Proposal", "Closed won", "Closed lost")
    }
    deals = [
        Opportunity(name="钢管", contact_id=contact.id, stage_id=stage["Proposal"],
                    amount=Decimal("12000.50"), currency="CNY"),
        Opportunity(name="年度合同", account_id=firm.id, stage_id=stage["Prospecting"]),
        Opportunity(name="已成交", contact_id=contact.id, stage_id=stage["Closed won"]),
        Opportunity(name="已丢失", account_id=firm.id, stage_id=stage["Closed lost"]),
        Opportunity(name="回收站", contact_id=contact.id, stage_id=stage["Proposal"], deleted_at=T0),
        Opportunity(name="旧公司的", account_id=old_firm.id, stage_id=stage["Proposal"]),
    ]  # fmt: skip
    session.add_all(deals)
    await session.flush()
    activities = []
    for n in range(7):
        activities.append(
            await log_activity(
                session, kind="call" if n % 2 else "email", subject=f"第{n}次",
                records=[contact], occurred_at=T0 + dt.timedelta(hours=n),
            )
        )  # fmt: skip
    activities[6].deleted_at = T0  # the newest is in the bin
    await log_activity(session, kind="note", subject="公司", records=[firm], occurred_at=T0)
    await session.flush()

    lookup = await find_callers(session, "87654321", CHENGDU)
    # The contact and the account it works at share the switchboard: one caller.
    assert not lookup.ambiguous and not lookup.unknown
    person, company = lookup.matches
    assert (person.record_type, person.record_id, person.name) == ("contact", contact.id, "张伟")
    assert person.account == AccountRef(firm.id, "成都贸易有限公司")  # primary, not the first
    assert person.owner == OwnerRef(agent.id, "李娜")
    assert [(d.name, d.stage, d.amount, d.currency) for d in person.open_opportunities] == [
        ("年度合同", "Prospecting", None, "CNY"),
        ("钢管", "Proposal", Decimal("12000.50"), "CNY"),
    ]
    assert person.open_tickets == () and person.open_tasks == ()
    assert person.last_activities == tuple(
        RecentActivity(a.id, a.kind, a.subject, a.occurred_at) for a in activities[5:0:-1]
    )
    assert [a.subject for a in person.last_activities] == [
        "第5次",
        "第4次",
        "第3次",
        "第2次",
        "第1次",
    ]
    assert (company.record_type, company.record_id, company.name) == ("account", firm.id, firm.name)
    assert company.account is None and company.owner == OwnerRef(agent.id, "李娜")
    assert [d.name for d in company.open_opportunities] == ["年度合同"]
    assert [a.subject for a in company.last_activities] == ["公司"]


async def test_a_lead_and_someone_elses_account_are_two_callers(session: AsyncSession) -> None:
    owner = User(username="wang")  # no display name: the user name is shown
    session.add(owner)
    await session.flush()
    lead = Lead(company="蓉城科技", mobile="15012345678", owner_id=owner.id)
    stranger = Account(name="别的公司", phone="150 1234 5678")
    await add(session, lead, stranger)
    lookup = await find_callers(session, "15012345678", CHENGDU)
    assert [(m.record_type, m.name) for m in lookup.matches] == [
        ("lead", "蓉城科技"), ("account", "别的公司")
    ]  # fmt: skip
    assert lookup.matches[0].owner == OwnerRef(owner.id, "wang")
    assert lookup.matches[0].account is None and lookup.matches[1].owner is None
    assert lookup.ambiguous


async def test_the_card_costs_the_same_few_queries_however_many_match(
    session: AsyncSession,
) -> None:
    agent = User(username="zhao")
    session.add(agent)
    await session.flush()
    firm = Account(name="总机公司", phone="028-66668888", owner_id=agent.id)
    await add(session, firm)
    staff = [
        Contact(last_name=f"员工{n}", phone="028 6666 8888", owner_id=agent.id) for n in range(6)
    ]
    await add(session, *staff)
    session.add_all(AccountContact(account_id=firm.id, contact_id=c.id) for c in staff)
    for c in staff:
        await log_activity(session, kind="call", subject="来电", records=[c, firm], occurred_at=T0)
    single = Contact(last_name="独自", mobile="18612345678", owner_id=agent.id)
    await add(session, single)
    await log_activity(session, kind="call", subject="来电", records=[single], occurred_at=T0)

    with counting_statements(session) as one:
        assert len((await find_callers(session, "18612345678", CHENGDU)).matches) == 1
    with counting_statements(session) as seven:
        lookup = await find_callers(session, "66668888", CHENGDU)
    assert len(lookup.matches) == 7 and lookup.ambiguous
    assert [len(m.last_activities) for m in lookup.matches] == [1] * 6 + [5]
    # The match, accounts, owners, opportunities and activities: five, never one per match.
    assert len(one) == len(seven) == 5


# The properties -------------------------------------------------------------------------

# Prefixes and area codes the numbering plan (and so phonenumbers) knows.
MOBILE_PREFIXES = ["130", "133", "135", "138", "139", "147", "150", "152", "158", "166",
                   "173", "177", "180", "186", "189", "191", "198", "199"]  # fmt: skip
AREA_CODES = ["10", "20", "21", "22", "23", "24", "25", "27", "28", "29", "311", "371",
              "431", "451", "512", "531", "551", "571", "591", "731", "755", "769", "898"]  # fmt: skip
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
DIGITS = "0123456789"


def _valid(e164: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(e164))


@st.composite
def chinese_numbers(draw: st.DrawFn) -> tuple[str, str, str]:
    """(E.164, area code or "" for a mobile, national significant number)."""
    if draw(st.booleans()):
        national = draw(st.sampled_from(MOBILE_PREFIXES)) + draw(
            st.text(DIGITS, min_size=8, max_size=8)
        )
        return f"+86{national}", "", national
    area = draw(st.sampled_from(AREA_CODES))
    subscriber = draw(st.sampled_from("2345678")) + draw(st.text(DIGITS, min_size=7, max_size=7))
    return f"+86{area}{subscriber}", area, area + subscriber


def _spread(draw: st.DrawFn, digits: str) -> str:
    """Spaces, dashes and dots where people put them (or anywhere)."""
    out = []
    for n, ch in enumerate(digits):
        if n and draw(st.integers(0, 4)) == 0:
            out.append(draw(st.sampled_from([" ", "-", ".", " - ", "  "])))
        out.append(ch)
    return "".join(out)


@st.composite
def written(draw: st.DrawFn, number: tuple[str, str, str]) -> str:
    """One way a person or a PBX writes ``number``, with its country or trunk prefix."""
    _e164, area, national = number
    subscriber = national[len(area) :]
    if area:
        body = draw(st.sampled_from([
            "0" + _spread(draw, national), f"(0{area}) " + _spread(draw, subscriber),
            f"0{area}-" + _spread(draw, subscriber), f"({area}) " + _spread(draw, subscriber),
        ]))  # fmt: skip
        international = draw(st.sampled_from(["+86 ", "+86-", "0086 ", "86 ", "(+86) ", "+86 (0)"]))
        body_intl = _spread(draw, national)
    else:
        body = draw(st.sampled_from(["", "0"])) + _spread(draw, national)
        international = draw(st.sampled_from(["+86 ", "+86", "0086", "0086 ", "86", "(+86) "]))
        body_intl = _spread(draw, national)
    ip = draw(st.sampled_from(["17951", "12593 ", "17911-", "17909"]))
    text = draw(
        st.sampled_from(
            [body, international + body_intl, ip + "0" + national if area else ip + body]
        )
    )
    return text.translate(FULL_WIDTH) if draw(st.booleans()) else text


@st.composite
def number_and_two_spellings(draw: st.DrawFn) -> tuple[str, str, str]:
    number = draw(chinese_numbers().filter(lambda n: _valid(n[0])))
    return number[0], draw(written(number)), draw(written(number))


@settings(max_examples=200, deadline=None)
@given(number_and_two_spellings())
def test_any_spelling_of_a_valid_number_has_its_e164_as_key(case: tuple[str, str, str]) -> None:
    e164, stored, sent = case
    for raw in (stored, sent):
        key = normalise_phone(raw, CHENGDU)
        assert key is not None and (key.e164, key.match_key) == (e164, e164), raw
        assert key.kind in ("mobile", "fixed")


@settings(max_examples=200, deadline=None)
@given(
    chinese_numbers().filter(lambda n: n[1] != "" and _valid(n[0])), st.booleans(), st.booleans()
)
def test_a_local_number_on_its_own_trunk_has_the_full_key(
    number: tuple[str, str, str], zero: bool, outside: bool
) -> None:
    e164, area, national = number
    trunk = PhoneRegion(area_code=("0" if zero else "") + area, outside_prefix="9")
    sent = ("9" if outside else "") + national[len(area) :]
    key = normalise_phone(sent, trunk)
    assert key is not None and key.match_key == e164


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(number_and_two_spellings(), st.sampled_from(["phone", "mobile"]))
async def test_a_stored_number_is_found_by_any_spelling_of_it(
    session: AsyncSession, case: tuple[str, str, str], field: str
) -> None:
    # One session for every example: a number drawn twice has two owners, both found.
    _e164, stored, sent = case
    contact = Contact(last_name="Property", **{field: stored})
    await add(session, contact)
    assert ("contact", contact.id) in await ids(session, sent)


async def test_the_phone_index_reader_finds_what_a_session_finds(store: Store) -> None:
    """The ringing-call path (own connection, outside transactions) agrees with match_ids."""
    async with store.session() as session, session.begin():
        husband = Contact(first_name="明", last_name="陈", mobile="13912345678")
        wife = Contact(first_name="丽", last_name="陈", phone="+86 139 1234 5678")
        gone = Contact(first_name="旧", last_name="号", mobile="13800001111")
        office = Account(name="成都办公室", phone="(028) 8765-4321")
        await add(session, husband, wife, gone, office)
        await soft_delete(session, "contact", gone.id, None)
    reader = PhoneIndexReader(store.engine)
    try:
        for number in ("013912345678", "8613912345678", "87654321", "913800001111", "10086",
                       "+8617912345678", None, "anonymous"):  # fmt: skip
            async with store.session() as session:
                expected = await match_ids(session, number, CHENGDU)
            assert await reader.match_ids(number, CHENGDU) == expected
        assert await reader.match_ids("139 1234 5678", CHENGDU) == [
            ("contact", husband.id), ("contact", wife.id),
        ]  # fmt: skip
        assert await reader.match_ids("87654321", CHENGDU) == [("account", office.id)]
        # A record added later is seen at once: the reader holds no snapshot.
        async with store.session() as session, session.begin():
            late = Contact(first_name="新", last_name="客", mobile="18600001234")
            await add(session, late)
        assert await reader.match_ids("+86 186 0000 1234", CHENGDU) == [("contact", late.id)]
    finally:
        await reader.aclose()


async def test_the_card_shows_each_records_open_tasks_soonest_first(session: AsyncSession) -> None:
    contact = Contact(last_name="张", mobile="13912345678")
    other = Contact(last_name="李", mobile="13700000000")
    await add(session, contact, other)
    day = dt.timedelta(days=1)

    async def task(subject: str, due: dt.datetime | None, record: Contact = contact,
                   status: str = "planned") -> int:  # fmt: skip
        made = await log_activity(session, kind="task", subject=subject, records=[record],
                                  occurred_at=T0, due_at=due, status=status)  # fmt: skip
        return made.id

    later = await task("寄样品", T0 + 3 * day)
    overdue = await task("回电话", T0 - day)
    undated = await task("有空时拜访", None)
    soon = await task("发报价", T0 + day)
    for n in range(3):
        await task(f"跟进{n}", T0 + (4 + n) * day)  # the sixth and seventh are not shown
    await task("已完成", T0, status="done")
    await task("已取消", T0, status="cancelled")
    binned = await task("回收站", T0)
    await task("别人的", T0, record=other)
    await log_activity(session, kind="note", subject="不是任务", records=[contact],
                       occurred_at=T0 + day)  # fmt: skip
    deleted = await session.get(Activity, binned)
    assert deleted is not None
    deleted.deleted_at = T0
    await session.flush()

    [match] = (await find_callers(session, "13912345678", CHENGDU)).matches
    assert [t.id for t in match.open_tasks[:4]] == [overdue, soon, later, match.open_tasks[3].id]
    assert [t.subject for t in match.open_tasks] == ["回电话", "发报价", "寄样品", "跟进0", "跟进1"]
    assert match.open_tasks[0] == OpenTask(overdue, "回电话", T0 - day)
    assert undated not in {t.id for t in match.open_tasks}  # undated ones come last
    # The recent list is as before: the newest activities, tasks among them.
    assert match.last_activities[0].subject == "不是任务"
    [few] = (await find_callers(session, "13700000000", CHENGDU)).matches
    assert [t.subject for t in few.open_tasks] == ["别人的"]
