"""The records API's plumbing: one declaration per operation, the caller, bodies, refusals.

An ``Operation`` names its route, handler, body and query models and its
answers; the routes are registered from it and the OpenAPI document is
written from it (``web/openapi.py``), so neither can list what the other lacks.
Handlers refuse by raising: ``refuse`` (401/403/404, ``{"error": ...}``) and
``problems`` (422, ``{"errors": {field: message}}``); the store's
``ValidationError`` and ``NotFound`` become the same answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from sqlalchemy import TypeDecorator
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import access_for
from store.db import Store
from store.errors import NotFound, ValidationError
from store.models import User
from web.api import MAX_BODY_BYTES, USER_KEY
from web.api_models import RECORDS, Error, Problems, problems_of
from web.auth import Viewer
from web.i18n import Translator
from web.modules import MAX_ID, MODULES, Module

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)
API_RECORDS_STORE_KEY = web.AppKey("api_records_store", Store)
VIEWER_KEY = web.RequestKey("api_viewer", Viewer)


@dataclass(frozen=True)
class Operation:
    """One method on one path, as served and as documented."""

    method: str
    path: str  # as the document writes it: /api/v1/leads/{id}
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, tuple[type[BaseModel] | None, str]]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    public: bool = False  # served without a token
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    # A security scheme of the document's that the call carries instead of a bearer token.
    security: str | None = None
    # The media types its body may be sent as (each with the body's schema).
    body_types: tuple[str, ...] = ("application/json",)
    # Headers an answer carries, by status: {303: {"Location": "the thank-you page"}}.
    headers: Mapping[int, Mapping[str, str]] = field(default_factory=dict)

    @property
    def route(self) -> str:
        return self.path.replace("{id}", r"{id:\d+}")


def refusals(*statuses: int) -> dict[int, tuple[type[BaseModel], str]]:
    """The usual refusals' answers, for an operation's ``answers``."""
    said: dict[int, tuple[type[BaseModel], str]] = {
        401: (Error, "no valid bearer token"),
        403: (Error, "the token user's role may not do this"),
        404: (Error, "no such record in the token user's scope"),
        413: (Error, "a body over 1 MB"),
        422: (Problems, "every problem of the request, by field"),
    }
    return {status: said[status] for status in statuses}


def _json_error(exception: type[web.HTTPException], body: Mapping[str, Any]) -> web.HTTPException:
    return exception(text=json.dumps(body, ensure_ascii=False), content_type="application/json")


def refuse(status: int, message: str) -> web.HTTPException:
    text = json.dumps({"error": message}, ensure_ascii=False)
    if status == 413:
        return web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY_BYTES, text=text, content_type="application/json"
        )
    kinds: dict[int, type[web.HTTPException]] = {
        401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
    }  # fmt: skip
    return kinds[status](text=text, content_type="application/json")


def problems(errors: Mapping[str, str]) -> web.HTTPException:
    return _json_error(web.HTTPUnprocessableEntity, {"errors": dict(errors)})


def store_of(request: web.Request) -> Store:
    return request.app[API_RECORDS_STORE_KEY]


async def caller(request: web.Request) -> Viewer:
    """The token's user with their role's access, loaded once per request."""
    if VIEWER_KEY in request:
        return request[VIEWER_KEY]
    async with store_of(request).session() as session:
        user = await session.get(User, request[USER_KEY])
        if user is None:  # deleted between the token check and now
            raise refuse(401, "unknown or revoked token")
        access = await access_for(session, user)
    viewer = Viewer(
        user_id=user.id, username=user.username,
        display_name=user.display_name or user.username, locale=user.locale,
        timezone=user.timezone, csrf="", access=access,
        # The API speaks English: its messages are for integrators' logs, not for people.
        t=Translator("en", user.timezone),
    )  # fmt: skip
    request[VIEWER_KEY] = viewer
    return viewer


async def allowed(request: web.Request, module: str, action: str) -> Viewer:
    """The caller, if their role may ``action`` on ``module`` (else 403)."""
    viewer = await caller(request)
    if not viewer.access.can(module, action):
        raise refuse(403, f"your role may not {action} {module}")
    return viewer


async def body_of(request: web.Request, model: type[Model]) -> Model:
    """The JSON body, validated by ``model``; every problem at once (422)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise refuse(413, "a body over 1 MB")
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except PydanticError as err:
        raise problems(problems_of(err)) from None


def query_of(request: web.Request, model: type[Model]) -> Model:
    try:
        return model.model_validate(dict(request.query))
    except PydanticError as err:
        raise problems(problems_of(err)) from None


def guarded(handler: Handler) -> Handler:
    """The store's refusals as the API's answers."""

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ValidationError as err:
            raise problems({k: str(v) for k, v in err.errors.items()}) from None
        except NotFound:
            raise refuse(404, "not found") from None

    return guard


def add_operations(app: web.Application, operations: list[Operation]) -> None:
    for op in operations:
        app.router.add_route(op.method, op.route, guarded(op.handler), name=op.operation_id)


# Records ----------------------------------------------------------------------------------


def shown(module: Module, record: Any) -> dict[str, Any]:
    """A record as the API shows it (its module's answer model, as JSON)."""
    out: dict[str, Any] = RECORDS[module.key].out.model_validate(record).model_dump(mode="json")
    return out


async def check_refs(
    session: AsyncSession, module: Module, viewer: Viewer, values: dict[str, Any]
) -> dict[str, str]:
    """A named account or contact must exist and be in the caller's scope."""
    errors = {}
    for f in module.fields:
        if f.kind == "ref" and f.ref and values.get(f.name) is not None:
            target: Any = await session.get(MODULES[f.ref].model, values[f.name])
            if target is None or target.deleted_at is not None or not viewer.access.may_see(target):
                errors[f.name] = "Choose a record."
    return errors


# Keyset cursors ----------------------------------------------------------------------------
# Opaque to clients: the sort it belongs to, the edge row's sort value and its id.


def cursor_for(sort: str, value: Any, record_id: int) -> str:
    if isinstance(value, dt.datetime):
        value = {"t": value.isoformat()}
    raw = json.dumps([sort, value, record_id], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def edge_of(text: str, sort: str, column: Any) -> tuple[Any, int]:
    """A cursor's (sort value, id) for ``column`` under ``sort``, else 422."""
    kind = column.type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    try:
        said, value, record_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(value, dict):
            value = dt.datetime.fromisoformat(value["t"])
    except (ValueError, TypeError, KeyError):
        said = None
    if (
        said != sort
        or not isinstance(value, kind.python_type)
        or (isinstance(value, dt.datetime) and value.tzinfo is None)
        or not isinstance(record_id, int)
        or isinstance(record_id, bool)
        or not 0 < record_id <= MAX_ID
    ):
        raise problems({"cursor": "not a cursor this list gave with this sort"})
    return value, record_id
