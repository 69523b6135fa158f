"""The records API: the pages' permission checks, keyset paging, and its own OpenAPI document.

Every response of the walk below is validated against the schema the document
gives for its status, so the API and ``/api/v1/openapi.json`` cannot drift.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.api_tokens import create_api_token
from store.db import Store
from store.models import Contact, Lead, PipelineStage, User
from tests.web.browsing import make_user
from web.app import create_app


async def _token(store: Store, username: str) -> dict[str, str]:
    async with store.session() as session, session.begin():
        token = await create_api_token(session, username, "tests")
    return {"Authorization": f"Bearer {token}"}


class Checked:
    """Calls the live API and checks every answer against the OpenAPI document."""

    def __init__(self, client: TestClient, spec: dict[str, Any], headers: dict[str, str]) -> None:
        self.client, self.spec, self.headers = client, spec, headers
        self.seen: set[tuple[str, str]] = set()

    async def call(self, method: str, template: str, path: str, **kw: Any) -> tuple[int, Any]:
        answer: ClientResponse = await self.client.request(method, path, headers=self.headers, **kw)
        operation = self.spec["paths"][template][method.lower()]
        documented = operation["responses"].get(str(answer.status))
        assert documented is not None, f"{method} {path}: {answer.status} is not documented"
        body = await answer.json() if answer.status != 204 else None
        if "content" in documented:
            schema = documented["content"]["application/json"]["schema"]
            resolver = {"components": self.spec["components"], **schema}
            jsonschema.validate(body, resolver, cls=jsonschema.Draft202012Validator)
        self.seen.add((template, method.lower()))
        return answer.status, body


async def test_every_operation_answers_as_its_openapi_document_says(store: Store) -> None:
    await make_user(store, "boss", "admin")
    headers = await _token(store, "boss")
    async with TestClient(TestServer(create_app(store))) as client:
        spec_answer = await client.get("/api/v1/openapi.json")  # no token needed
        assert spec_answer.status == 200
        spec = await spec_answer.json()
        api = Checked(client, spec, headers)
        made: dict[str, int] = {}
        bodies = {"leads": {"last_name": "陈", "status": "new", "email": "chen@jinlong.cn"},
                  "contacts": {"last_name": "王", "first_name": "芳", "phone": "13800138000"},
                  "accounts": {"name": "金龙贸易", "city": "杭州"},
                  "opportunities": {"name": "年度采购", "currency": "CNY", "amount": "88000"}}  # fmt: skip
        for key, body in bodies.items():
            status, created = await api.call("POST", f"/api/v1/{key}", f"/api/v1/{key}", json=body)
            assert status == 201
            made[key] = created["id"]
            status, _ = await api.call("POST", f"/api/v1/{key}", f"/api/v1/{key}",
                                       json={"no_such_field": 1})  # fmt: skip
            assert status == 422
            one = f"/api/v1/{key}/{{id}}"
            status, got = await api.call("GET", one, f"/api/v1/{key}/{made[key]}")
            assert status == 200 and got["id"] == made[key]
            status, _ = await api.call("GET", one, f"/api/v1/{key}/999999")
            assert status == 404
            status, page = await api.call("GET", f"/api/v1/{key}", f"/api/v1/{key}?limit=10")
            assert status == 200 and [r["id"] for r in page["items"]] == [made[key]]
            status, _ = await api.call("GET", f"/api/v1/{key}", f"/api/v1/{key}?limit=0")
            assert status == 422
            field = "name" if key in ("accounts", "opportunities") else "last_name"
            status, changed = await api.call("PATCH", one, f"/api/v1/{key}/{made[key]}",
                                             json={field: "改过"})  # fmt: skip
            assert status == 200 and changed[field] == "改过"
            status, _ = await api.call("PATCH", one, f"/api/v1/{key}/{made[key]}", json={field: ""})
            assert status == 422
            status, _ = await api.call("GET", f"/api/v1/{key}/{{id}}/activities",
                                       f"/api/v1/{key}/{made[key]}/activities")  # fmt: skip
            assert status == 200
        status, logged = await api.call("POST", "/api/v1/activities", "/api/v1/activities", json={
            "kind": "note", "subject": "电话沟通", "records": [f"contact:{made['contacts']}"]})  # fmt: skip
        assert status == 201 and logged["kind"] == "note"
        status, _ = await api.call("POST", "/api/v1/activities", "/api/v1/activities",
                                   json={"kind": "party", "records": []})  # fmt: skip
        assert status == 422
        async with store.session() as session:
            stages = {s.name: s.id for s in await session.scalars(select(PipelineStage))}
        stage = "/api/v1/opportunities/{id}/stage"
        deal = f"/api/v1/opportunities/{made['opportunities']}/stage"
        status, said = await api.call("POST", stage, deal, json={"stage_id": stages["Proposal"]})
        assert status == 422 and "expected_close" in said["errors"]
        status, moved = await api.call("POST", stage, deal, json={
            "stage_id": stages["Proposal"], "values": {"expected_close": "2026-12-31"}})  # fmt: skip
        assert status == 200 and moved["stage_id"] == stages["Proposal"]
        convert = "/api/v1/leads/{id}/convert"
        status, converted = await api.call("POST", convert, f"/api/v1/leads/{made['leads']}/convert",
                                           json={"create_opportunity": True, "amount": "5000"})  # fmt: skip
        assert status == 201 and converted["opportunity_id"]
        status, _ = await api.call("POST", "/api/v1/calls", "/api/v1/calls",
                                   json={"number": "13800138000", "record": "contact:1"})  # fmt: skip
        assert status == 202
        status, _ = await api.call("POST", "/api/v1/calls", "/api/v1/calls", json={"number": "x"})
        assert status == 422
        for key in bodies:
            status, _ = await api.call("DELETE", f"/api/v1/{key}/{{id}}", f"/api/v1/{key}/{made[key]}")
            assert status == 204
        status, _ = await api.call("POST", "/api/v1/mail", "/api/v1/mail", json={})
        assert status == 503  # no outbox in this app
        status, _ = await api.call("POST", "/api/v1/mail/preview", "/api/v1/mail/preview", json={})
        assert status == 503
        unauthenticated = Checked(client, spec, {})
        status, _ = await unauthenticated.call("GET", "/api/v1/leads", "/api/v1/leads")
        assert status == 401
    documented = {(path, method) for path, item in spec["paths"].items()
                  for method in item if method != "parameters"}  # fmt: skip
    assert documented - api.seen == set(), "operations the walk never called"


async def test_scope_and_permissions_hold_through_the_api(store: Store) -> None:
    a1 = await make_user(store, "a1", "agent", team="华东")
    await make_user(store, "m", "manager", team="华东")
    b1 = await make_user(store, "b1", "agent", team="华南")
    async with store.session() as session, session.begin():
        east = (await session.get(User, a1)).team_id  # type: ignore[union-attr]
        south = (await session.get(User, b1)).team_id  # type: ignore[union-attr]
        mine = Lead(last_name="Mine", owner_id=a1, team_id=east)
        theirs = Lead(last_name="Theirs", owner_id=b1, team_id=south)
        session.add_all([mine, theirs])
        await session.flush()
        mine_id, theirs_id = mine.id, theirs.id
    async with TestClient(TestServer(create_app(store))) as client:
        agent = await _token(store, "a1")
        listed = await (await client.get("/api/v1/leads", headers=agent)).json()
        assert [r["id"] for r in listed["items"]] == [mine_id]
        for method, kw in (("GET", {}), ("PATCH", {"json": {"last_name": "x"}})):
            answer = await client.request(method, f"/api/v1/leads/{theirs_id}", headers=agent, **kw)
            assert answer.status == 404 and "error" in await answer.json()
        for lead in (mine_id, theirs_id):
            refused = await client.delete(f"/api/v1/leads/{lead}", headers=agent)
            assert refused.status == 403  # agents may not delete at all
        manager = await _token(store, "m")
        listed = await (await client.get("/api/v1/leads", headers=manager)).json()
        assert [r["id"] for r in listed["items"]] == [mine_id]
        linked = await client.post("/api/v1/activities", headers=agent, json={
            "kind": "note", "subject": "x", "records": [f"lead:{theirs_id}"]})  # fmt: skip
        assert linked.status == 422  # a record out of scope cannot be named


async def test_keyset_pages_return_every_record_once(store: Store) -> None:
    await make_user(store, "boss", "admin")
    async with store.session() as session, session.begin():
        session.add_all(Contact(last_name=f"张{n:03d}") for n in range(75))
    headers = await _token(store, "boss")
    async with TestClient(TestServer(create_app(store))) as client:
        seen: list[str] = []
        url = "/api/v1/contacts?limit=20&sort=last_name"
        while True:
            page = await (await client.get(url, headers=headers)).json()
            seen += [r["last_name"] for r in page["items"]]
            if page["next"] is None:
                break
            url = f"/api/v1/contacts?limit=20&sort=last_name&cursor={page['next']}"
        assert seen == [f"张{n:03d}" for n in range(75)]
        bad = await client.get("/api/v1/contacts?cursor=garbage", headers=headers)
        assert bad.status == 422
