"""The records API holds the pages' rules: permissions, scope, keyset paging, every problem named.

The document-driven walk over every operation is ``test_openapi.py``; these
are the rules a walk cannot know: whose records an agent and a manager see,
that pages cover every record once, what a conversion, a stage move and a
dial leave behind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.activities import timeline
from store.api_tokens import create_api_token
from store.db import Store
from store.models import (
    Contact,
    Lead,
    LeadStatus,
    Opportunity,
    PipelineStage,
    RecordScope,
    Role,
    StageHistory,
    User,
)
from tests.web.browsing import make_user
from web.app import create_app

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


async def _token(store: Store, username: str) -> dict[str, str]:
    async with store.session() as session, session.begin():
        token = await create_api_token(session, username, "tests")
    return {"Authorization": f"Bearer {token}"}


async def _team_of(store: Store, user_id: int) -> int | None:
    async with store.session() as session:
        return await session.scalar(select(User.team_id).where(User.id == user_id))


async def _leads(store: Store, **owners: int) -> dict[str, int]:
    """A lead per name, owned by the user given, in that user's team."""
    made = {}
    async with store.session() as session, session.begin():
        for name, owner in owners.items():
            team = await session.scalar(select(User.team_id).where(User.id == owner))
            lead = Lead(last_name=name, email=f"{name}@jinlong.cn", owner_id=owner, team_id=team)
            session.add(lead)
            await session.flush()
            made[name] = lead.id
    return made


async def test_an_agent_reaches_only_their_own_records_and_a_manager_their_team(
    store: Store,
) -> None:
    async with store.session() as session, session.begin():
        # Like an agent, but may delete: so scope, not permission, is what refuses below.
        session.add(Role(name="closer", scope=RecordScope.OWN,
                         permissions={"leads": ["view", "create", "edit", "delete"],
                                      "activities": ["create"]}))  # fmt: skip
    a1 = await make_user(store, "a1", "closer", team="华东")
    a2 = await make_user(store, "a2", "agent", team="华东")
    await make_user(store, "m", "manager", team="华东")
    b1 = await make_user(store, "b1", "agent", team="华南")
    leads = await _leads(store, mine=a1, colleague=a2, south=b1)
    async with TestClient(TestServer(create_app(store))) as client:
        agent, manager = await _token(store, "a1"), await _token(store, "m")

        listed = await (await client.get("/api/v1/leads", headers=agent)).json()
        assert [r["id"] for r in listed["items"]] == [leads["mine"]]
        found = await client.get("/api/v1/leads?q=south@jinlong.cn", headers=agent)
        assert (await found.json())["items"] == []
        for other in ("colleague", "south"):
            url = f"/api/v1/leads/{leads[other]}"
            for method, kw in (("GET", {}), ("PATCH", {"json": {"last_name": "改"}}),
                               ("DELETE", {})):  # fmt: skip
                answer = await client.request(method, url, headers=agent, **kw)
                assert answer.status == 404, (other, method)
                assert await answer.json() == {"error": "not found"}  # as if it did not exist
            assert (await client.get(f"{url}/activities", headers=agent)).status == 404
            linked = await client.post("/api/v1/activities", headers=agent, json={
                "kind": "note", "subject": "x", "records": [f"lead:{leads[other]}"]})  # fmt: skip
            assert linked.status == 422
            assert "records.0" in (await linked.json())["errors"]
        mine = await client.patch(f"/api/v1/leads/{leads['mine']}", headers=agent,
                                  json={"company": "金龙"})  # fmt: skip
        assert mine.status == 200 and (await mine.json())["company"] == "金龙"

        listed = await (await client.get("/api/v1/leads", headers=manager)).json()
        assert {r["id"] for r in listed["items"]} == {leads["mine"], leads["colleague"]}
        assert (await client.get(f"/api/v1/leads/{leads['south']}", headers=manager)).status == 404
        changed = await client.patch(f"/api/v1/leads/{leads['colleague']}", headers=manager,
                                     json={"status": "contacted"})  # fmt: skip
        assert changed.status == 200
        gone = await client.delete(f"/api/v1/leads/{leads['colleague']}", headers=manager)
        assert gone.status == 204
        listed = await (await client.get("/api/v1/leads", headers=manager)).json()
        assert [r["id"] for r in listed["items"]] == [leads["mine"]]

        a2_token = await _token(store, "a2")
        refused = await client.delete(f"/api/v1/leads/{leads['mine']}", headers=a2_token)
        assert refused.status == 403  # agents may not delete at all, whosever it is
        assert (await client.get("/api/v1/leads")).status == 401
        no_accounts = await client.get("/api/v1/accounts", headers=agent)  # closers see leads only
        assert no_accounts.status == 403 and "accounts" in (await no_accounts.json())["error"]

    async with store.session() as session:
        rows = {r.last_name: r for r in await session.scalars(select(Lead))}
    assert rows["south"].last_name == "south" and rows["south"].deleted_at is None
    assert rows["colleague"].status == LeadStatus.CONTACTED
    assert rows["colleague"].deleted_at is not None  # in the recycle bin, not gone


async def test_keyset_pages_return_every_record_exactly_once(store: Store) -> None:
    owner = await make_user(store, "a1", "agent", team="华东")
    other = await make_user(store, "b1", "agent", team="华南")
    async with store.session() as session, session.begin():
        # Ties on purpose: ten share a name, all share a creation time.
        session.add_all(Contact(last_name=f"张{n % 65:03d}", owner_id=owner, created_at=T0,
                                updated_at=T0 + dt.timedelta(seconds=n % 7))
                        for n in range(75))  # fmt: skip
        session.add_all(Contact(last_name="别人", owner_id=other) for _ in range(5))
    async with store.session() as session:
        expected = set(await session.scalars(select(Contact.id).where(Contact.owner_id == owner)))
    headers = await _token(store, "a1")
    async with TestClient(TestServer(create_app(store))) as client:
        for sort in ("last_name", "-last_name", "-created_at", "updated_at", "-updated_at"):
            seen: list[int] = []
            names: list[str] = []
            url = f"/api/v1/contacts?limit=20&sort={sort}"
            pages = 0
            while True:
                page = await (await client.get(url, headers=headers)).json()
                pages += 1
                seen += [r["id"] for r in page["items"]]
                names += [r["last_name"] for r in page["items"]]
                if page["next"] is None:
                    break
                url = f"/api/v1/contacts?limit=20&sort={sort}&cursor={page['next']}"
            assert len(seen) == len(set(seen)) == 75 and set(seen) == expected, sort
            assert pages == 4
            if sort.endswith("last_name"):
                assert names == sorted(names, reverse=sort.startswith("-"))
        first = await (await client.get("/api/v1/contacts?limit=5&sort=last_name",
                                        headers=headers)).json()  # fmt: skip
        other_sort = await client.get(f"/api/v1/contacts?sort=-created_at&cursor={first['next']}",
                                      headers=headers)  # fmt: skip
        assert other_sort.status == 422 and "cursor" in (await other_sort.json())["errors"]
        for bad in ("limit=201", "limit=0", "cursor=garbage", "sort=password_hash", "owner=x"):
            answer = await client.get(f"/api/v1/contacts?{bad}", headers=headers)
            assert answer.status == 422, bad


async def test_bad_values_are_refused_with_every_problem_named(store: Store) -> None:
    await make_user(store, "a1", "agent", team="华东")
    headers = await _token(store, "a1")
    async with TestClient(TestServer(create_app(store))) as client:
        answer = await client.post("/api/v1/leads", headers=headers, json={
            "first_name": "伟", "email": "not-an-address", "phone": "call me",
            "status": "converted", "website": "w" * 300, "favourite_colour": "red",
            "owner_id": "12",
        })  # fmt: skip
        assert answer.status == 422
        errors = (await answer.json())["errors"]
        assert set(errors) == {"last_name", "email", "phone", "status", "website",
                               "favourite_colour", "owner_id"}  # fmt: skip
        assert errors["last_name"] == "This field is required."  # the forms' words
        assert errors["email"] == "Not an email address."
        assert errors["phone"] == "Not a phone number."
        deal = await client.post("/api/v1/opportunities", headers=headers, json={
            "name": "年度采购", "amount": "-5", "expected_close": "2026-02-30",
            "currency": "GBP", "account_id": 999999})  # fmt: skip
        assert set((await deal.json())["errors"]) == {"amount", "expected_close", "currency"}
        unknown = await client.post("/api/v1/opportunities", headers=headers,
                                    json={"name": "x", "account_id": 999999})  # fmt: skip
        assert (await unknown.json())["errors"] == {"account_id": "Choose a record."}
        async with store.session() as session:
            assert await session.scalar(select(Lead.id)) is None  # nothing half-made


async def test_owner_changes_follow_the_forms_rules(store: Store) -> None:
    a1 = await make_user(store, "a1", "agent", team="华东")
    a2 = await make_user(store, "a2", "agent", team="华东")
    b1 = await make_user(store, "b1", "agent", team="华南")
    await make_user(store, "m", "manager", team="华东")
    async with TestClient(TestServer(create_app(store))) as client:
        manager, agent = await _token(store, "m"), await _token(store, "a1")
        made = await client.post("/api/v1/contacts", headers=manager,
                                 json={"last_name": "李", "owner_id": a1})  # fmt: skip
        assert made.status == 201
        contact = await made.json()
        assert (contact["owner_id"], contact["team_id"]) == (a1, await _team_of(store, a1))
        away = await client.patch(f"/api/v1/contacts/{contact['id']}", headers=agent,
                                  json={"owner_id": b1, "title": "经理"})  # fmt: skip
        assert away.status == 422 and set((await away.json())["errors"]) == {"owner_id"}
        handed = await client.patch(f"/api/v1/contacts/{contact['id']}", headers=agent,
                                    json={"owner_id": a2})  # fmt: skip
        assert handed.status == 200 and (await handed.json())["owner_id"] == a2
        # Handed over, it left the agent's own scope.
        assert (await client.get(f"/api/v1/contacts/{contact['id']}", headers=agent)).status == 404
        kept = await client.get(f"/api/v1/contacts/{contact['id']}", headers=manager)
        assert (await kept.json())["title"] is None  # the refused change changed nothing


async def test_conversion_stage_moves_activities_and_dialling(store: Store) -> None:
    a1 = await make_user(store, "a1", "agent", team="华东")
    leads = await _leads(store, chen=a1)
    headers = await _token(store, "a1")
    async with store.session() as session:
        stages = {s.name: s.id for s in await session.scalars(select(PipelineStage))}
    async with TestClient(TestServer(create_app(store))) as client:
        url = f"/api/v1/leads/{leads['chen']}/convert"
        converted = await client.post(url, headers=headers, json={
            "account_name": "陈氏贸易", "create_opportunity": True, "amount": 5000})  # fmt: skip
        assert converted.status == 201
        made = await converted.json()
        again = await client.post(url, headers=headers, json={})
        assert again.status == 422 and "lead" in (await again.json())["errors"]

        deal = f"/api/v1/opportunities/{made['opportunity_id']}/stage"
        refused = await client.post(deal, headers=headers, json={"stage_id": stages["Proposal"]})
        assert refused.status == 422
        assert set((await refused.json())["errors"]) == {"expected_close"}  # amount was given
        moved = await client.post(deal, headers=headers, json={
            "stage_id": stages["Proposal"], "values": {"expected_close": "2026-12-31"}})  # fmt: skip
        assert moved.status == 200
        assert (await moved.json())["probability"] == 60

        logged = await client.post("/api/v1/activities", headers=headers, json={
            "kind": "task", "subject": "寄样品", "due_at": "2026-12-01T09:00:00+08:00",
            "records": [f"contact:{made['contact_id']}", f"account:{made['account_id']}"]})  # fmt: skip
        assert logged.status == 201
        task = await logged.json()
        assert task["status"] == "planned"
        history = await client.get(f"/api/v1/accounts/{made['account_id']}/activities?kind=task",
                                   headers=headers)  # fmt: skip
        assert [a["id"] for a in (await history.json())["items"]] == [task["id"]]
        # A weekly meeting with a reminder, as the activity form makes one.
        weekly = await client.post("/api/v1/activities", headers=headers, json={
            "kind": "meeting", "subject": "周会", "occurred_at": "2030-01-07T09:00:00+08:00",
            "ends_at": "2030-01-07T10:00:00+08:00", "location": "会议室",
            "records": [f"account:{made['account_id']}"], "remind_minutes": 15,
            "repeat": {"freq": "weekly", "count": 4}})  # fmt: skip
        assert weekly.status == 201, await weekly.text()
        meeting = await weekly.json()
        assert meeting["recurrence"] == "FREQ=WEEKLY;INTERVAL=1;COUNT=4"
        assert dt.datetime.fromisoformat(meeting["remind_at"]) == dt.datetime(
            2030, 1, 7, 0, 45, tzinfo=dt.UTC)  # fmt: skip
        assert meeting["location"] == "会议室"
        unanchored = await client.post("/api/v1/activities", headers=headers, json={
            "kind": "task", "subject": "x", "records": [f"account:{made['account_id']}"],
            "remind_minutes": 5, "repeat": {"freq": "daily", "count": 2,
                                            "until": "2030-01-31"}})  # fmt: skip
        assert unanchored.status == 422
        assert set((await unanchored.json())["errors"]) == {"repeat", "remind_minutes"}

        async with store.bus.subscribe("DialRequested") as requests:
            dialled = await client.post("/api/v1/calls", headers=headers, json={
                "number": "138 1234 5678", "record": f"contact:{made['contact_id']}"})  # fmt: skip
            event = await asyncio.wait_for(requests.get(), 2)
        assert dialled.status == 202
        answer: dict[str, Any] = await dialled.json()
        # The event the phone panel's dial button publishes, for the same phone side.
        assert event.data == {"request": answer["request"], "user_id": a1, "pbx": None,
                              "number": "138 1234 5678",
                              "origin": f"contact:{made['contact_id']}"}  # fmt: skip
    async with store.session() as session:
        lead = await session.get(Lead, leads["chen"])
        opportunity = await session.get(Opportunity, made["opportunity_id"])
        rows = await session.scalars(
            select(StageHistory).where(StageHistory.opportunity_id == made["opportunity_id"])
        )
        on_contact = await timeline(session, "contact", made["contact_id"])
    assert lead is not None and lead.status == LeadStatus.CONVERTED
    assert opportunity is not None and str(opportunity.expected_close) == "2026-12-31"
    assert len(list(rows)) == 2  # entered the first stage, then Proposal
    assert [a.subject for a in on_contact] == ["寄样品"]
