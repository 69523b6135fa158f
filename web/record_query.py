"""Finding the records a viewer may see: permission checks, scoped loading, list queries.

Shared by the record pages (``web/records.py``, ``web/record_forms.py``) and the
JSON API.  Every query is limited to the viewer's scope (``Access.visible``)
and live rows; a record out of scope is a 404, so its existence does not leak.
Lists page by keyset: a cursor is the sort value and id of the edge row.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from aiohttp import web
from sqlalchemy import TypeDecorator, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import Access
from store.db import Store
from store.dialect import likely, unindexed
from store.identity import lookup_email, lookup_phone
from store.models import User
from web.auth import Viewer, permitted
from web.modules import MAX_ID, MODULES, Module, db_int

RECORDS_STORE_KEY = web.AppKey("records_store", Store)


def module_of(request: web.Request, action: str = "view") -> tuple[Module, Viewer]:
    """The URL's module and the viewer, who must have ``action`` on it (else 403)."""
    module = MODULES[request.match_info["module"]]
    return module, permitted(request, (module.key, action))


def records_store(request: web.Request) -> Store:
    """The store the record pages were registered with."""
    return request.app[RECORDS_STORE_KEY]


async def load_visible(
    session: AsyncSession, module: Module, access: Access, record_id: str
) -> Any:
    """The live record the viewer may see, else 404 (out of scope looks like absent)."""
    wanted = db_int(record_id)
    if wanted is None:
        raise web.HTTPNotFound()
    record: Any = await session.get(module.model, wanted)
    if record is None or record.deleted_at is not None or not access.may_see(record):
        raise web.HTTPNotFound()
    return record


async def user_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    """Display names (else user names) of users by id."""
    rows = await session.execute(
        select(User.id, User.display_name, User.username).where(User.id.in_(sorted(ids)))
    )
    return {uid: display or name for uid, display, name in rows}


async def assignable(session: AsyncSession, viewer: Viewer) -> list[tuple[int, str]]:
    """Users the viewer may hand records to: everyone for all-scope, else their teams."""
    query = select(User.id, User.display_name, User.username).where(User.is_active.is_(True))
    access = viewer.access
    if not (access.is_admin or access.scope == "all"):
        query = query.where(
            or_(User.id == viewer.user_id, User.team_id.in_(sorted(access.team_ids)))
        )
    rows = await session.execute(query.order_by(User.username))
    return [(uid, display or name) for uid, display, name in rows]


def _cursor(value: Any, record_id: int) -> str:
    """A keyset cursor for a URL: the edge row's sort value and id, base64 of JSON."""
    if isinstance(value, dt.datetime):
        value = {"t": value.isoformat()}
    raw = json.dumps([value, record_id], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(text: str) -> tuple[Any, int] | None:
    """A cursor's (sort value, id), or None for anything that is not one of ours."""
    try:
        value, record_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(value, dict):
            value = dt.datetime.fromisoformat(value["t"])
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
    except (ValueError, TypeError, KeyError):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | dt.datetime):
        return None
    if not isinstance(record_id, int) or not 0 < record_id <= MAX_ID:
        return None
    return value, record_id


def keyset_edge(column: Any, text: str | None) -> tuple[Any, int] | None:
    """A cursor for a keyset on ``column``, if its value has the column's type (else None).

    A value of another type (an edited or stale URL) would be an error on PostgreSQL.
    """
    edge = _uncursor(text) if text else None
    kind = column.type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    if edge is None or not isinstance(edge[0], kind.python_type):
        return None
    return edge


def _prefix(column: Any, text: str) -> Any:
    """``column`` starts with ``text``, as a range an index can serve."""
    return and_(column >= text, column < text + "\uffff")


def _phone_like(term: str) -> bool:
    digits = sum(ch.isdigit() for ch in term)
    return digits >= 5 and all(ch.isdigit() or ch in "+-() ." for ch in term)


async def filtered(
    session: AsyncSession, module: Module, viewer: Viewer, params: Any
) -> tuple[Any, list[Any]]:
    """The list's query before sort and paging, and the conditions it applied."""
    model: Any = module.model
    conditions: list[Any] = [
        likely(session, unindexed(session, model.deleted_at).is_(None)),
        viewer.access.visible(model),
    ]
    term = str(params.get("q", "")).strip()
    if term:
        if "@" in term:
            ids = [m.record_id for m in await lookup_email(session, term, [module.record_type])]
            conditions.append(model.id.in_(ids))
        elif _phone_like(term) and module.phones:
            matches = await lookup_phone(session, term, record_types=[module.record_type])
            ids = [m.record_id for m in matches]
            conditions.append(model.id.in_(ids))
        else:
            # Index-friendly prefix ranges (a LIKE '%x%' scans a million rows).
            variants = {term, term[:1].upper() + term[1:]}
            ranges: list[Any] = [
                _prefix(getattr(model, column), v) for column in module.names for v in variants
            ]
            if module.record_type in ("lead", "contact") and len(term) > 1:
                # A Chinese full name: the surname (one or two characters), then the given name.
                for cut in (1, 2):
                    if len(term) > cut:
                        ranges.append(and_(model.last_name == term[:cut],
                                            _prefix(model.first_name, term[cut:])))  # fmt: skip
            conditions.append(or_(*ranges))
    for name in module.filters:
        value = str(params.get(name, "")).strip()
        if value:
            conditions.append(_filter(module, name, value))
    owner = str(params.get("owner", ""))
    if owner == "me":
        conditions.append(model.owner_id == viewer.user_id)
    elif owner:
        owner_id = db_int(owner)
        conditions.append(model.owner_id == owner_id if owner_id is not None else false())
    return select(model).where(*conditions), conditions


def _filter(module: Module, name: str, value: str) -> Any:
    """``name`` equals ``value``; a value the column can never hold matches nothing."""
    column = getattr(module.model, name)
    if name.endswith("_id"):
        wanted = db_int(value)
        return column == wanted if wanted is not None else false()
    choices = module.filter_choices(name)
    return column == value if not choices or value in choices else false()


def _sort(module: Module, params: Any) -> tuple[str, bool]:
    wanted = str(params.get("sort", module.default_sort))
    name = wanted.lstrip("-")
    if name not in module.sorts:
        wanted = module.default_sort
        name = wanted.lstrip("-")
    return name, wanted.startswith("-")
