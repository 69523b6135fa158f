"""The JSON API for leads, contacts, accounts and opportunities, and their timelines.

Every call acts as its token's user with the pages' checks: the role's
permission for the module and action (403 without it) and the record scope on
every list, read, change and delete (a record outside it is 404, like one
that does not exist).  Lists page by keyset with an opaque ``cursor``, never
by offset.  Bodies and query strings are validated by ``web/api_models.py``;
a delete moves the record to the recycle bin.  Activities, conversion, stage
moves and dialling are in ``web/api_actions.py``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import timeline
from store.base import utcnow
from store.db import Store
from store.identity import index_record
from store.models import ActivityLink, User
from store.pipeline import enter_stage, first_open_stage
from store.records import acting_as
from store.recycle import soft_delete
from web.api_actions import ACTION_OPERATIONS
from web.api_models import (
    RECORDS,
    Activity,
    ActivityPage,
    TimelineQuery,
)
from web.api_spec import (
    API_RECORDS_STORE_KEY,
    Handler,
    Operation,
    add_operations,
    allowed,
    body_of,
    check_refs,
    cursor_for,
    edge_of,
    problems,
    query_of,
    refusals,
    shown,
    store_of,
)
from web.auth import Viewer
from web.modules import _NOT_NULL, MODULES, Module
from web.record_query import assignable, filtered, load_visible


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    """Empty text is no value (NULL), except in the columns that are never NULL."""
    return {k: None if v == "" and k not in _NOT_NULL else v for k, v in values.items()}


async def _owner(
    session: AsyncSession, viewer: Viewer, wanted: int | None, current: int | None,
    errors: dict[str, str],
) -> tuple[int, int | None] | None:  # fmt: skip
    """The owner and team a record gets: someone the caller may assign to (as on the forms)."""
    if wanted is None or wanted == current:
        return None
    if wanted not in {uid for uid, _ in await assignable(session, viewer)}:
        errors["owner_id"] = "Choose a user."
        return None
    if wanted == viewer.user_id:
        return wanted, viewer.access.team_id
    return wanted, await session.scalar(select(User.team_id).where(User.id == wanted))


async def list_records(request: web.Request, module: Module) -> web.Response:
    viewer = await allowed(request, module.key, "view")
    query: Any = query_of(request, RECORDS[module.key].query)
    sort = query.sort or module.default_sort
    name, descending = sort.lstrip("-"), sort.startswith("-")
    model: Any = module.model
    column = getattr(model, name)
    edge = edge_of(query.cursor, sort, column) if query.cursor else None
    wanted = {"q", "owner", *module.filters}
    params = {k: str(v) for k, v in query.model_dump(include=wanted, exclude_none=True).items()}
    async with store_of(request).session() as session:
        selected, _ = await filtered(session, module, viewer, params)
        if edge is not None:
            value, edge_id = edge
            beyond = column < value if descending else column > value
            tie = model.id < edge_id if descending else model.id > edge_id
            selected = selected.where(or_(beyond, and_(column == value, tie)))
        order = (column.desc(), model.id.desc()) if descending else (column.asc(), model.id.asc())
        rows = list((await session.scalars(selected.order_by(*order).limit(query.limit + 1))).all())
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        following = cursor_for(sort, getattr(rows[-1], name), rows[-1].id) if more else None
        return web.json_response({"items": [shown(module, r) for r in rows], "next": following})


async def get_record(request: web.Request, module: Module) -> web.Response:
    viewer = await allowed(request, module.key, "view")
    async with store_of(request).session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        return web.json_response(shown(module, record))


async def create_record(request: web.Request, module: Module) -> web.Response:
    viewer = await allowed(request, module.key, "create")
    body: Any = await body_of(request, RECORDS[module.key].create)
    values = _columns(body.model_dump(exclude={"owner_id"}))
    async with store_of(request).session() as session, session.begin():
        errors = await check_refs(session, module, viewer, values)
        owner = await _owner(session, viewer, body.owner_id, viewer.user_id, errors)
        if errors:
            raise problems(errors)
        owner_id, team_id = owner or (viewer.user_id, viewer.access.team_id)
        with acting_as(session, viewer.user_id):
            record: Any = module.model(**values, owner_id=owner_id, team_id=team_id)
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
        answer = shown(module, record)
    return web.json_response(answer, status=201)


async def update_record(request: web.Request, module: Module) -> web.Response:
    viewer = await allowed(request, module.key, "edit")
    body: Any = await body_of(request, RECORDS[module.key].update)
    values = _columns(body.model_dump(include=body.model_fields_set - {"owner_id"}))
    async with store_of(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        errors = await check_refs(session, module, viewer, values)
        owner = await _owner(session, viewer, body.owner_id, record.owner_id, errors)
        if errors:
            raise problems(errors)
        with acting_as(session, viewer.user_id):
            for name, value in values.items():
                setattr(record, name, value)
            if owner is not None:
                record.owner_id, record.team_id = owner
            await session.flush()
            await index_record(session, record)
        answer = shown(module, record)
    return web.json_response(answer)


async def delete_record(request: web.Request, module: Module) -> web.Response:
    """Into the recycle bin (``store.recycle``), whence it can be restored."""
    viewer = await allowed(request, module.key, "delete")
    async with store_of(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        with acting_as(session, viewer.user_id):
            await soft_delete(session, module.record_type, record.id, viewer.user_id)
    return web.Response(status=204)


async def record_timeline(request: web.Request, module: Module) -> web.Response:
    viewer = await allowed(request, module.key, "view")
    query = query_of(request, TimelineQuery)
    async with store_of(request).session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        edge = None
        if query.cursor:
            edge = edge_of(query.cursor, "timeline", ActivityLink.occurred_at)
        found = await timeline(session, module.record_type, record.id, before=edge,
                               kinds=[query.kind] if query.kind else None,
                               limit=query.limit + 1)  # fmt: skip
        more = len(found) > query.limit
        found = found[: query.limit]
        following = cursor_for("timeline", found[-1].occurred_at, found[-1].id) if more else None
        items = [Activity.model_validate(a).model_dump(mode="json") for a in found]
    return web.json_response({"items": items, "next": following})


def _bound(handler: Any, module: Module) -> Handler:
    async def for_module(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request, module)
        return response

    for_module.__name__ = f"{handler.__name__}_{module.key}"
    return for_module


def record_operations(module: Module) -> list[Operation]:
    models = RECORDS[module.key]
    one, some = module.singular.lower(), module.title.lower()
    base, item = f"/api/v1/{module.key}", f"/api/v1/{module.key}/{{id}}"
    tag = module.title
    out: type[BaseModel] = models.out
    return [
        Operation("GET", base, _bound(list_records, module), f"list_{module.key}",
                  f"{module.title} in the caller's scope, a page at a time", tag,
                  {200: (models.page, "a page"), **refusals(401, 403, 422)},
                  query=models.query),
        Operation("POST", base, _bound(create_record, module), f"create_{module.record_type}",
                  f"Create a {one}", tag,
                  {201: (out, f"the new {one}"), **refusals(401, 403, 413, 422)},
                  body=models.create),
        Operation("GET", item, _bound(get_record, module), f"get_{module.record_type}",
                  f"One {one}", tag, {200: (out, f"the {one}"), **refusals(401, 403, 404)}),
        Operation("PATCH", item, _bound(update_record, module), f"update_{module.record_type}",
                  f"Change some fields of a {one}", tag,
                  {200: (out, f"the {one} as changed"), **refusals(401, 403, 404, 413, 422)},
                  body=models.update),
        Operation("DELETE", item, _bound(delete_record, module), f"delete_{module.record_type}",
                  f"Move a {one} to the recycle bin", tag,
                  {204: (None, "in the recycle bin"), **refusals(401, 403, 404)}),
        Operation("GET", f"{item}/activities", _bound(record_timeline, module),
                  f"timeline_{module.record_type}", f"A {one}'s timeline, newest first", tag,
                  {200: (ActivityPage, f"a page of the {one}'s activities"),
                   **refusals(401, 403, 404, 422)},
                  query=TimelineQuery, description=f"Mail, calls, notes and tasks of {some}."),
    ]  # fmt: skip


OPERATIONS: list[Operation] = [
    *(op for module in MODULES.values() for op in record_operations(module)),
    *ACTION_OPERATIONS,
]


def add_records_api_routes(app: web.Application, store: Store) -> None:
    app[API_RECORDS_STORE_KEY] = store
    add_operations(app, OPERATIONS)
