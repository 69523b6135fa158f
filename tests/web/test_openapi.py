"""The API against its own OpenAPI document.

Every operation the document lists is called on the live app with requests
built from the document's own schemas: valid ones (from each schema's
examples and the ids of records that exist) must succeed; invalid ones (a
value the schema refuses, a required field left out, an unknown field, a body
that is not JSON) must be a 422 that names the field.  Every answer's status
must be documented for its operation and its body must match the documented
schema.  The document and the router must list the same operations.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from store.api_tokens import create_api_token
from store.db import Store
from store.models import Account, Contact, Lead, Opportunity, PipelineStage, Role, User
from tests.web.browsing import make_user
from web.app import create_app

WIRE_DATETIME = "2026-11-23T10:00:00+08:00"
# Values tried against each field; the ones its schema refuses are sent and must be refused.
CANDIDATES: list[Any] = ["zz", "", "2026-13-45", -1, 0, 10**19, 1e16, True, None, [True],
                         {"zz": 1}]  # fmt: skip


class FakeOutbox:
    """A ``MailApi`` at our own seam: the mail calls' validation is the web layer's here."""

    async def send(self, user_id: int, body: Mapping[str, Any]) -> int:
        return 7

    async def preview(self, user_id: int, body: Mapping[str, Any]) -> dict[str, str | None]:
        return {"subject": "您好", "text": "正文", "html": None}


class Walk:
    """Calls the live API and holds every answer to the document."""

    def __init__(self, client: TestClient, spec: dict[str, Any], headers: dict[str, str]) -> None:
        self.client, self.spec, self.headers = client, spec, headers
        self.context: dict[str, Any] = {}
        self.calls = 0

    def validator(self, schema: Mapping[str, Any]) -> jsonschema.Draft202012Validator:
        root = {"components": self.spec["components"], **schema}
        return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            schema = self.spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def example(
        self, schema: Mapping[str, Any], name: str | None = None, full: bool = False
    ) -> Any:
        """A value the schema accepts: its example, or a record that exists for an id."""
        schema = self.resolve(schema)
        if name in self.context:
            return self.context[name]
        for key in ("examples", "enum"):
            if key in schema:
                return schema[key][0]
        if "const" in schema:
            return schema["const"]
        if "anyOf" in schema:
            branch = next(b for b in schema["anyOf"] if b.get("type") != "null")
            return self.example(branch, name, full)
        kind = schema.get("type")
        if kind == "object":
            required = set(schema.get("required", ()))
            return {key: self.example(sub, key, full)
                    for key, sub in schema.get("properties", {}).items()
                    if full or key in required}  # fmt: skip
        if kind == "array":
            return [self.example(schema["items"], None, full)] * max(1, schema.get("minItems", 0))
        if kind == "string":
            formats = {"date": "2026-12-31", "date-time": WIRE_DATETIME, "email": "a@jinlong.cn"}
            return formats.get(schema.get("format", ""), "x" * max(1, schema.get("minLength", 1)))
        if kind == "integer":
            return max(1, schema.get("minimum", 1))
        return {"number": 1, "boolean": True}.get(str(kind))

    def refused(self, schema: Mapping[str, Any]) -> Iterator[Any]:
        """A few values the schema refuses (at most three)."""
        checker = self.validator(schema)
        limit = self.resolve(schema).get("maxLength")
        tried = [*CANDIDATES, "x" * (limit + 1)] if limit else CANDIDATES
        return iter([v for v in tried if not checker.is_valid(v)][:3])

    async def call(self, method: str, template: str, path: str, *, expect: int | None = None,
                   headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:  # fmt: skip
        answer = await self.client.request(
            method, path, headers=self.headers if headers is None else headers, **kw
        )
        self.calls += 1
        operation = self.spec["paths"][template][method.lower()]
        documented = operation["responses"].get(str(answer.status))
        text = await answer.text()
        assert documented is not None, f"{method} {path}: {answer.status} undocumented: {text}"
        body = json.loads(text) if text else None
        if "content" in documented:
            schema = documented["content"]["application/json"]["schema"]
            self.validator(schema).validate(body)
        else:
            assert body is None
        if expect is not None:
            assert answer.status == expect, f"{method} {path} {kw}: {answer.status} {text}"
        return answer.status, body


def operations(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in sorted(spec["paths"].items()):
        for method, operation in sorted(item.items()):
            yield method.upper(), path, operation


def token_operations(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The operations a bearer token (or nothing) calls.

    The lead form is walked by its own test below: it takes a form key, not a
    token (a token is no key: 401, never 403), it limits posts per address (a
    walk's dozens of calls would meet 429), and it takes form bodies and fields
    the document does not list, so the JSON walk's "unknown field" and "not a
    string" refusals do not apply.
    """
    for method, path, operation in operations(spec):
        if {"formKey": []} not in operation.get("security", ()):
            yield method, path, operation


def _named(errors: Mapping[str, str], where: str) -> bool:
    """A problem is reported for ``where`` (or for a part of it, or the field it is part of)."""
    return any(k == where or k.startswith(where + ".") or where.startswith(k + ".") for k in errors)


async def _fresh(store: Store, template: str, owner: int) -> int:
    """A record for an operation's ``{id}`` (each call gets its own, so deletes do not collide)."""
    kind = template.split("/")[3]
    async with store.session() as session, session.begin():
        stage = await session.scalar(select(PipelineStage.id).order_by(PipelineStage.position))
        record: Any = {
            "leads": lambda: Lead(last_name="林", email="lin@jinlong.cn", owner_id=owner),
            "contacts": lambda: Contact(last_name="周", owner_id=owner),
            "accounts": lambda: Account(name="金龙贸易", owner_id=owner),
            "opportunities": lambda: Opportunity(name="年度采购", stage_id=stage, owner_id=owner),
        }[kind]()
        session.add(record)
        await session.flush()
        return int(record.id)


async def _walk_app(store: Store) -> tuple[int, dict[str, str], dict[str, Any]]:
    boss = await make_user(store, "boss", "admin")
    async with store.session() as session, session.begin():
        token = await create_api_token(session, "boss", "walk")
        stage = await session.scalar(select(PipelineStage.id).order_by(PipelineStage.position))
        account = Account(name="杭州金龙", owner_id=boss)
        contact = Contact(last_name="王", first_name="芳", owner_id=boss)
        session.add_all([account, contact])
        await session.flush()
        context = {"account_id": account.id, "contact_id": contact.id, "owner_id": boss,
                   "stage_id": stage, "records": [f"contact:{contact.id}"],
                   "record": f"contact:{contact.id}"}  # fmt: skip
    return boss, {"Authorization": f"Bearer {token}"}, context


async def test_document_and_router_list_the_same_operations(store: Store) -> None:
    app = create_app(store)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/api/v1/openapi.json")  # no token
        assert answer.status == 200
        spec = await answer.json()
    assert spec["openapi"] == "3.1.0"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["components"]["securitySchemes"]["formKey"] == {
        "type": "apiKey", "in": "header", "name": "X-Form-Key",
        "description": spec["components"]["securitySchemes"]["formKey"]["description"]}  # fmt: skip
    assert spec["paths"]["/forms/lead"]["post"]["security"] == [{"formKey": []}]
    documented = {(method, path) for method, path, _ in operations(spec)}
    # The lead form is documented too; its CORS preflight (OPTIONS) is for browsers, not callers.
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS")
        and (route.resource.canonical.startswith("/api/v1/")
             or route.resource.canonical == "/forms/lead")
    }  # fmt: skip
    assert documented == served
    for schema in spec["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for method, path, operation in operations(spec):
        assert operation["operationId"] and operation["responses"], (method, path)
        if operation.get("security") != []:
            assert "401" in operation["responses"], (method, path)
        if "{id}" in path:
            assert "404" in operation["responses"], (method, path)
        if "requestBody" in operation or any(p["in"] == "query" for p in
                                             operation.get("parameters", ())):  # fmt: skip
            assert "422" in operation["responses"], (method, path)


async def test_valid_requests_succeed_and_invalid_ones_name_their_problem(store: Store) -> None:
    boss, headers, context = await _walk_app(store)
    async with TestClient(TestServer(create_app(store, mail=FakeOutbox()))) as client:
        spec = await (await client.get("/api/v1/openapi.json")).json()
        walk = Walk(client, spec, headers)
        walk.context = context
        for method, template, operation in token_operations(spec):
            success = min(int(s) for s in operation["responses"] if s.startswith("2"))
            path = template
            if "{id}" in template:
                path = template.replace("{id}", str(await _fresh(store, template, boss)))
            query = {p["name"]: walk.example(p["schema"], p["name"])
                     for p in operation.get("parameters", ()) if p["in"] == "query"}  # fmt: skip
            query = {k: str(v) for k, v in query.items() if v != "x"}  # free text: no example
            body_schema = (
                operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ).get("schema")
            if body_schema is None:
                await walk.call(method, template, path, params=query, expect=success)
                for p in operation.get("parameters", ()):
                    if p["in"] != "query":
                        continue
                    for bad in _refused_on_the_wire(walk, p["schema"]):
                        status, said = await walk.call(method, template, path,
                                                       params={**query, p["name"]: bad})  # fmt: skip
                        assert status == 422 and _named(said["errors"], p["name"]), (p, bad, said)
                continue
            minimal, full = walk.example(body_schema), walk.example(body_schema, full=True)
            for body in (minimal, full):
                if "{id}" in template:  # a fresh record for each: a lead converts once
                    path = template.replace("{id}", str(await _fresh(store, template, boss)))
                await walk.call(method, template, path, json=body, expect=success)
            await _invalid_bodies(walk, method, template, path, body_schema, full)


def _refused_on_the_wire(walk: Walk, schema: Mapping[str, Any]) -> list[str]:
    """Query values (text on the wire) that the parameter's schema refuses once parsed."""
    numeric = "integer" in json.dumps(schema)
    checker = walk.validator(schema)
    found = []
    for text in ("zz", "0", "-1", str(10**19), "x" * 501):
        parsed: Any = int(text) if numeric and text.lstrip("-").isdigit() else text
        if not checker.is_valid(parsed):
            found.append(text)
    return found


async def _invalid_bodies(walk: Walk, method: str, template: str, path: str,
                          schema: Mapping[str, Any], full: dict[str, Any]) -> None:  # fmt: skip
    for raw in ("{not json", "[1, 2]"):
        status, said = await walk.call(method, template, path, data=raw.encode(),
                                       headers={**walk.headers, "Content-Type": "application/json"})  # fmt: skip
        assert status == 422 and "body" in said["errors"], (template, raw, said)
    resolved = walk.resolve(schema)
    for name in resolved.get("required", ()):
        body = {k: v for k, v in full.items() if k != name}
        status, said = await walk.call(method, template, path, json=body)
        assert status == 422 and _named(said["errors"], name), (template, name, said)
    if resolved.get("additionalProperties") is False:
        status, said = await walk.call(method, template, path, json={**full, "zz_unknown": 1})
        assert status == 422 and "zz_unknown" in said["errors"], (template, said)
    for where, sub, body_with in _fields(walk, resolved, full):
        for bad in walk.refused(sub):
            status, said = await walk.call(method, template, path, json=body_with(bad))
            assert status == 422 and _named(said["errors"], where), (template, where, bad, said)


def _fields(walk: Walk, schema: Mapping[str, Any], body: dict[str, Any], prefix: str = ""
            ) -> Iterator[tuple[str, Mapping[str, Any], Any]]:  # fmt: skip
    """Every field of a body (nested objects too), with a way to put another value in it."""
    for name, sub in schema.get("properties", {}).items():
        where = f"{prefix}{name}"

        def put(value: Any, name: str = name) -> dict[str, Any]:
            return {**body, name: value}

        yield where, sub, put
        inner = walk.resolve(next((b for b in sub.get("anyOf", [sub]) if "$ref" in b), sub))
        if inner.get("type") == "object" and isinstance(body.get(name), dict):
            for deeper, deeper_sub, deeper_put in _fields(walk, inner, body[name], f"{where}."):
                yield deeper, deeper_sub, (lambda v, p=deeper_put, n=name: {**body, n: p(v)})


async def test_refusals_are_the_documented_ones(store: Store) -> None:
    boss, headers, context = await _walk_app(store)
    async with store.session() as session, session.begin():
        session.add(Role(name="nothing", permissions={}, can_dial=False))
    await make_user(store, "nobody", "nothing")
    async with store.session() as session, session.begin():
        bare = {"Authorization": f"Bearer {await create_api_token(session, 'nobody')}"}
        assert await session.scalar(select(User.id).where(User.username == "nobody"))
    async with TestClient(TestServer(create_app(store, mail=FakeOutbox()))) as client:
        spec = await (await client.get("/api/v1/openapi.json")).json()
        walk = Walk(client, spec, headers)
        walk.context = context
        for method, template, operation in token_operations(spec):
            has_id = "{id}" in template
            path = template
            if has_id:
                path = template.replace("{id}", str(await _fresh(store, template, boss)))
            body_schema = (
                operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ).get("schema")
            body = walk.example(body_schema) if body_schema else None
            if operation.get("security") != []:
                await walk.call(method, template, path, json=body, headers={}, expect=401)
                await walk.call(method, template, path, json=body,
                                headers={"Authorization": "Bearer rpt_forged"}, expect=401)  # fmt: skip
            if "403" in operation["responses"]:
                await walk.call(method, template, path, json=body, headers=bare, expect=403)
            if has_id:
                for missing in ("999999999", "0", str(2**64)):
                    await walk.call(method, template, template.replace("{id}", missing),
                                    json=body, expect=404)  # fmt: skip
        huge = io.BytesIO(json.dumps({"last_name": "x" * (1024 * 1024 + 10)}).encode())
        await walk.call("POST", "/api/v1/leads", "/api/v1/leads", data=huge, expect=413,
                        headers={**headers, "Content-Type": "application/json"})  # fmt: skip


async def test_the_lead_form_gives_every_documented_answer(store: Store) -> None:
    """Each status the document gives ``POST /forms/lead``, called as a site would."""
    from store.web_forms import create_web_form, revoke_web_form, web_form_named
    from web.api_webforms import FORM_LIMIT_KEY, FormRateLimit

    site, thanks = "https://www.jinlong.cn", "https://www.jinlong.cn/thanks.html"
    async with store.session() as session, session.begin():
        key = await create_web_form(session, "contact-us", origins=[site], thank_you_url=thanks)
        old = await create_web_form(session, "old-form")
        await revoke_web_form(session, await web_form_named(session, "old-form"))
    app = create_app(store)
    app[FORM_LIMIT_KEY] = FormRateLimit(most=9)  # the tenth post below is one too many
    template = "/forms/lead"
    async with TestClient(TestServer(app)) as client:
        spec = await (await client.get("/api/v1/openapi.json")).json()
        operation = spec["paths"][template]["post"]
        assert set(operation["requestBody"]["content"]) == {
            "application/x-www-form-urlencoded", "multipart/form-data", "application/json"}  # fmt: skip
        documented = {int(status) for status in operation["responses"]}
        walk = Walk(client, spec, {})
        body = walk.example(operation["requestBody"]["content"]["application/json"]["schema"],
                            full=True)  # fmt: skip
        body.pop("_form_key")
        body["homepage"] = ""
        seen: set[int] = set()

        async def call(expect: int, headers: dict[str, str], **kw: Any) -> Any:
            status, said = await walk.call("POST", template, template, expect=expect,
                                           headers=headers, allow_redirects=False, **kw)  # fmt: skip
            seen.add(status)
            return said

        with_key = {"X-Form-Key": key}
        await call(201, with_key, json=body)  # built from the document's own examples
        form = {"_form_key": key, "name": "陈", "email": "chen@jinlong.cn", "homepage": ""}
        await call(303, {"Origin": site}, data=form)
        for refused in ({}, {"X-Form-Key": old}, {"Authorization": "Bearer rpt_forged"}):
            await call(401, refused, json=body)
        await call(403, {**with_key, "Origin": "https://evil.example"}, json=body)
        await call(413, with_key, json={"message": "x" * (17 * 1024)})
        await call(415, {**with_key, "Content-Type": "text/plain"}, data=b"hello")
        said = await call(422, with_key, json={"email": "not an address"})
        assert set(said["errors"]) == {"email", "last_name"}
        await call(429, with_key, json=body)
    assert seen == documented
