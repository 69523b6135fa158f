"""The JSON API for leads, contacts, accounts and opportunities, their activities, and dialling.

Every call acts as its token's user, with the same checks as the pages: the
role's permission for the module and action (403 without it) and the record
scope (a record outside it is 404, like one that does not exist).  Lists page
by an opaque keyset ``cursor``.  Bodies are validated by the same field specs
as the forms (``web/modules.py``), and the OpenAPI document
(``web/openapi.py``) is generated from those specs too, so the three agree.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy import and_, or_

from store.access import access_for
from store.activities import log_activity, timeline
from store.base import utcnow
from store.db import Store
from store.errors import NotFound, ValidationError
from store.identity import index_record
from store.leads import convert_lead
from store.models import ActivityKind, ActivityStatus, User
from store.pipeline import advance_stage, enter_stage, first_open_stage
from store.records import acting_as
from store.recycle import soft_delete
from web.api import USER_KEY
from web.auth import Viewer
from web.i18n import Translator
from web.modules import BY_TYPE, MODULES, Module, _parse, validate
from web.phone import request_dial
from web.record_query import _cursor, _sort, _uncursor, filtered, load_visible

API_RECORDS_STORE_KEY = web.AppKey("api_records_store", Store)
MAX_LIMIT = 200
ACTIVITY_KINDS = ("note", "task", "meeting", "call", "visit")


def _error(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)


async def _viewer(request: web.Request) -> Viewer:
    store = request.app[API_RECORDS_STORE_KEY]
    async with store.session() as session:
        user = await session.get(User, request[USER_KEY])
        assert user is not None
        access = await access_for(session, user)
    return Viewer(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        locale=user.locale,
        timezone=user.timezone,
        csrf="",
        access=access,
        t=Translator("en", user.timezone),
    )


async def _allowed(request: web.Request, action: str) -> tuple[Module, Viewer]:
    module = MODULES[request.match_info["module"]]
    viewer = await _viewer(request)
    if not viewer.access.can(module.key, action):
        raise web.HTTPForbidden(
            text=json.dumps({"error": f"your role may not {action} {module.key}"}),
            content_type="application/json",
        )
    return module, viewer


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as err:
        raise ValidationError({"body": f"not JSON: {err}"}) from err
    if not isinstance(body, dict):
        raise ValidationError({"body": "a JSON object"})
    return body


def as_json(module: Module, record: Any) -> dict[str, Any]:
    """A record as the API shows it: its fields, plus id, owner, team and times."""
    out: dict[str, Any] = {"id": record.id}
    for f in module.fields:
        out[f.name] = _plain(getattr(record, f.name))
    if module.key == "leads":
        out["converted_at"] = _plain(record.converted_at)
    if module.key == "opportunities":
        out["stage_id"] = record.stage_id
        out["probability"] = record.probability
    out.update(
        owner_id=record.owner_id,
        team_id=record.team_id,
        created_at=_plain(record.created_at),
        updated_at=_plain(record.updated_at),
    )
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _problems(err: ValidationError) -> web.Response:
    return _error(422, errors={k: str(v) for k, v in err.errors.items()})


async def list_records(request: web.Request) -> web.Response:
    module, viewer = await _allowed(request, "view")
    params = request.query
    raw_limit = params.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        return _error(422, errors={"limit": f"a whole number from 1 to {MAX_LIMIT}"})
    limit = int(raw_limit)
    cursor = None
    if params.get("cursor"):
        cursor = _uncursor(params["cursor"])
        if cursor is None:
            return _error(422, errors={"cursor": "not a cursor this API gave"})
    model: Any = module.model
    sort_name, descending = _sort(module, params)
    column = getattr(model, sort_name)
    async with request.app[API_RECORDS_STORE_KEY].session() as session:
        query, _ = await filtered(session, module, viewer, params)
        if cursor is not None:
            value, edge = cursor
            beyond = column < value if descending else column > value
            tie = model.id < edge if descending else model.id > edge
            query = query.where(or_(beyond, and_(column == value, tie)))
        order = (column.desc(), model.id.desc()) if descending else (column.asc(), model.id.asc())
        rows = list((await session.scalars(query.order_by(*order).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    following = _cursor(getattr(rows[-1], sort_name), rows[-1].id) if more and rows else None
    return web.json_response({"items": [as_json(module, r) for r in rows], "next": following})


async def get_record(request: web.Request) -> web.Response:
    module, viewer = await _allowed(request, "view")
    async with request.app[API_RECORDS_STORE_KEY].session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        return web.json_response(as_json(module, record))


async def create_record(request: web.Request) -> web.Response:
    module, viewer = await _allowed(request, "create")
    try:
        body = await _body(request)
        unknown = set(body) - {f.name for f in module.fields}
        values, errors = validate(module, body)
        errors.update({name: "not a field of this record" for name in unknown})
        if errors:
            raise ValidationError(errors)
        async with request.app[API_RECORDS_STORE_KEY].session() as session, session.begin():
            await _check_refs(session, module, viewer, values)
            with acting_as(session, viewer.user_id):
                record: Any = module.model(
                    **values, owner_id=viewer.user_id, team_id=viewer.access.team_id
                )
                stage = None
                if module.key == "opportunities":
                    stage = await first_open_stage(session)
                    record.stage_id, record.probability = stage.id, stage.probability
                session.add(record)
                await session.flush()
                await index_record(session, record)
                if stage is not None:
                    enter_stage(session, record, stage, user_id=viewer.user_id, now=utcnow())
                    await session.flush()
                shown = as_json(module, record)
    except ValidationError as err:
        return _problems(err)
    return web.json_response(shown, status=201)


async def _check_refs(session: Any, module: Module, viewer: Viewer, values: dict[str, Any]) -> None:
    errors = {}
    for f in module.fields:
        if f.kind == "ref" and f.ref and values.get(f.name) is not None:
            target: Any = await session.get(MODULES[f.ref].model, values[f.name])
            if target is None or target.deleted_at is not None or not viewer.access.may_see(target):
                errors[f.name] = "no such record"
    if errors:
        raise ValidationError(errors)


async def update_record(request: web.Request) -> web.Response:
    module, viewer = await _allowed(request, "edit")
    try:
        body = await _body(request)
        unknown = set(body) - {f.name for f in module.fields}
        async with request.app[API_RECORDS_STORE_KEY].session() as session, session.begin():
            record = await load_visible(session, module, viewer.access, request.match_info["id"])
            current = {f.name: _plain(getattr(record, f.name)) for f in module.fields}
            values, errors = validate(module, {**current, **body})
            errors = {k: v for k, v in errors.items() if k in body or k in unknown}
            errors.update({name: "not a field of this record" for name in unknown})
            if errors:
                raise ValidationError(errors)
            await _check_refs(session, module, viewer, values)
            with acting_as(session, viewer.user_id):
                for name in body:
                    setattr(record, name, values[name])
                await session.flush()
                await index_record(session, record)
            shown = as_json(module, record)
    except ValidationError as err:
        return _problems(err)
    return web.json_response(shown)


async def delete_record(request: web.Request) -> web.Response:
    module, viewer = await _allowed(request, "delete")
    async with request.app[API_RECORDS_STORE_KEY].session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        with acting_as(session, viewer.user_id):
            await soft_delete(session, module.record_type, record.id, viewer.user_id)
    return web.Response(status=204)


def activity_json(activity: Any) -> dict[str, Any]:
    return {
        "id": activity.id,
        "kind": activity.kind.value,
        "subject": activity.subject,
        "body": activity.body,
        "status": activity.status.value,
        "occurred_at": _plain(activity.occurred_at),
        "due_at": _plain(activity.due_at),
        "owner_id": activity.owner_id,
        "email_id": activity.email_id,
        "call_id": activity.call_id,
    }


async def record_activities(request: web.Request) -> web.Response:
    module, viewer = await _allowed(request, "view")
    before = None
    if request.query.get("cursor"):
        before = _uncursor(request.query["cursor"])
        if before is None:
            return _error(422, errors={"cursor": "not a cursor this API gave"})
    async with request.app[API_RECORDS_STORE_KEY].session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        found = await timeline(session, module.record_type, record.id, before=before, limit=51)
    more = len(found) > 50
    found = found[:50]
    following = _cursor(found[-1].occurred_at, found[-1].id) if more else None
    return web.json_response({"items": [activity_json(a) for a in found], "next": following})


async def create_activity(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    if not viewer.access.can("activities", "create"):
        return _error(403, error="your role may not create activities")
    try:
        body = await _body(request)
        errors: dict[str, str] = {}
        kind: Any = body.get("kind")
        if kind not in ACTIVITY_KINDS:
            errors["kind"] = f"one of {', '.join(ACTIVITY_KINDS)}"
        subject: Any = body.get("subject")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 500:
            errors["subject"] = "a text of 1 to 500 characters"
        due = None
        if body.get("due_at") is not None:
            try:
                due = dt.datetime.fromisoformat(str(body["due_at"]))
                if due.tzinfo is None:
                    raise ValueError
            except ValueError:
                errors["due_at"] = "an ISO 8601 time with its offset"
        refs: Any = body.get("records")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            errors["records"] = 'a list like ["contact:12"]'
        if errors:
            raise ValidationError(errors)
        async with request.app[API_RECORDS_STORE_KEY].session() as session, session.begin():
            linked = []
            for ref in refs:
                kind_of, _, rid = ref.partition(":")
                module = BY_TYPE.get(kind_of)
                if module is None or not rid.isdigit():
                    raise ValidationError({"records": f"{ref!r} is not a record"})
                try:
                    record = await load_visible(session, module, viewer.access, rid)
                except web.HTTPNotFound:
                    raise ValidationError({"records": f"{ref} does not exist"}) from None
                linked.append((module.record_type, record.id))
            with acting_as(session, viewer.user_id):
                activity = await log_activity(
                    session,
                    kind=ActivityKind(kind),
                    subject=subject.strip(),
                    records=linked,
                    body=str(body.get("body") or "")[:20000],
                    owner_id=viewer.user_id,
                    due_at=due,
                    status=ActivityStatus.PLANNED
                    if kind in ("task", "meeting")
                    else ActivityStatus.DONE,
                )
            shown = activity_json(activity)
    except ValidationError as err:
        return _problems(err)
    return web.json_response(shown, status=201)


async def convert(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    if not (viewer.access.can("leads", "edit") and viewer.access.can("contacts", "create")):
        return _error(403, error="your role may not convert leads")
    try:
        body = await _body(request)
        amount = None
        if body.get("amount") not in (None, ""):
            amount = _parse(MODULES["opportunities"].field("amount"), str(body["amount"]), str)
        async with request.app[API_RECORDS_STORE_KEY].session() as session, session.begin():
            lead = await load_visible(
                session, MODULES["leads"], viewer.access, request.match_info["id"]
            )
            account_id = body.get("account_id")
            if account_id is not None:
                await _check_refs(
                    session, MODULES["opportunities"], viewer, {"account_id": account_id}
                )
            with acting_as(session, viewer.user_id):
                result = await convert_lead(
                    session,
                    lead.id,
                    user_id=viewer.user_id,
                    account_id=account_id,
                    create_opportunity=bool(body.get("create_opportunity")),
                    opportunity_name=body.get("opportunity_name"),
                    amount=amount,
                )
            shown = {
                "account_id": result.account.id,
                "contact_id": result.contact.id,
                "opportunity_id": result.opportunity.id if result.opportunity else None,
            }
    except ValueError as err:
        return _error(422, errors={"amount": str(err)})
    except ValidationError as err:
        return _problems(err)
    return web.json_response(shown, status=201)


async def move_stage(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    if not viewer.access.can("opportunities", "edit"):
        return _error(403, error="your role may not edit opportunities")
    module = MODULES["opportunities"]
    try:
        body = await _body(request)
        stage_id = body.get("stage_id")
        if not isinstance(stage_id, int):
            raise ValidationError({"stage_id": "a stage id"})
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, raw in (body.get("values") or {}).items():
            field = next((f for f in module.fields if f.name == name), None)
            if field is None:
                errors[name] = "not a field of this record"
                continue
            try:
                values[name] = _parse(field, str(raw), lambda s, **k: s.format(**k))
            except ValueError as err:
                errors[name] = str(err)
        if errors:
            raise ValidationError(errors)
        async with request.app[API_RECORDS_STORE_KEY].session() as session, session.begin():
            deal = await load_visible(session, module, viewer.access, request.match_info["id"])
            try:
                moved = await advance_stage(
                    session, deal.id, stage_id, user_id=viewer.user_id, values=values
                )
            except NotFound:
                raise web.HTTPNotFound() from None
            shown = as_json(module, moved)
    except ValidationError as err:
        return _problems(err)
    return web.json_response(shown)


async def dial(request: web.Request) -> web.Response:
    viewer = await _viewer(request)
    if not viewer.access.can_dial:
        return _error(403, error="your role may not dial")
    try:
        body = await _body(request)
    except ValidationError as err:
        return _problems(err)
    number, origin = body.get("number"), body.get("record")
    if not isinstance(number, str) or not any(ch.isdigit() for ch in number):
        return _error(422, errors={"number": "a phone number"})
    if origin is not None and not (isinstance(origin, str) and ":" in origin):
        return _error(422, errors={"record": 'like "contact:12"'})
    store = request.app[API_RECORDS_STORE_KEY]
    requested = await request_dial(store, viewer.user_id, number, origin, None)
    return web.json_response({"request": requested, "state": "dialling"}, status=202)


def add_records_api_routes(app: web.Application, store: Store) -> None:
    app[API_RECORDS_STORE_KEY] = store
    m = "{module:leads|contacts|accounts|opportunities}"
    app.router.add_get(f"/api/v1/{m}", list_records)
    app.router.add_post(f"/api/v1/{m}", create_record)
    app.router.add_get(f"/api/v1/{m}/{{id:\\d+}}", get_record)
    app.router.add_patch(f"/api/v1/{m}/{{id:\\d+}}", update_record)
    app.router.add_delete(f"/api/v1/{m}/{{id:\\d+}}", delete_record)
    app.router.add_get(f"/api/v1/{m}/{{id:\\d+}}/activities", record_activities)
    app.router.add_post("/api/v1/activities", create_activity)
    app.router.add_post("/api/v1/leads/{id:\\d+}/convert", convert)
    app.router.add_post("/api/v1/opportunities/{id:\\d+}/stage", move_stage)
    app.router.add_post("/api/v1/calls", dial)
