"""Leads, contacts, accounts and opportunities: lists, detail pages, forms, conversion.

One set of handlers serves the four modules (``web/modules.py``).  Every
query is limited to the viewer's scope (``Access.visible``) and live rows; a
record out of scope is a 404, so its existence does not leak.  Lists page by
keyset (the sort value and id of the edge row), never by offset, so they stay
fast and right with a million rows and while rows arrive.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import urllib.parse
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy import TypeDecorator, and_, delete, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import Access
from store.activities import log_activity
from store.base import Base, utcnow
from store.db import Store
from store.dialect import likely
from store.errors import ValidationError
from store.identity import index_record, lookup_email, lookup_phone
from store.leads import convert_lead
from store.models import (
    Account,
    AccountContact,
    ActivityKind,
    ActivityLink,
    Contact,
    LeadStatus,
    Opportunity,
    PipelineStage,
    SavedView,
    User,
)
from store.pipeline import enter_stage, first_open_stage, stage_durations
from store.records import acting_as
from store.recycle import soft_delete
from store.tags import tag_record, tags_of
from web.auth import VIEWER, Viewer
from web.modules import BY_TYPE, MAX_ID, MODULES, Module, db_int, validate
from web.render import render
from web.timeline import timeline_entries, timeline_kinds

RECORDS_STORE_KEY = web.AppKey("records_store", Store)
PAGE_SIZE = 50
EXPORT_LIMIT = 100_000
MODULE_PATTERN = "{module:leads|contacts|accounts|opportunities}"


# Shared pieces ---------------------------------------------------------------------------


def _module(request: web.Request, action: str = "view") -> tuple[Module, Viewer]:
    module = MODULES[request.match_info["module"]]
    viewer = request[VIEWER]
    if not viewer.access.can(module.key, action):
        raise web.HTTPForbidden(text=viewer.t.gettext("You may not do this here."))
    return module, viewer


def _store(request: web.Request) -> Store:
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


async def _names(
    session: AsyncSession, model: type[Base], ids: set[int], attr: str
) -> dict[int, str]:
    if not ids:
        return {}
    column = getattr(model, attr)
    rows = await session.execute(select(model.id, column).where(model.id.in_(sorted(ids))))  # type: ignore[attr-defined]
    return {rid: name for rid, name in rows}


async def _user_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    rows = await session.execute(
        select(User.id, User.display_name, User.username).where(User.id.in_(sorted(ids)))
    )
    return {uid: display or name for uid, display, name in rows}


async def _stages(session: AsyncSession) -> list[PipelineStage]:
    return list(
        (
            await session.scalars(
                select(PipelineStage)
                .where(PipelineStage.is_active.is_(True))
                .order_by(PipelineStage.position)
            )
        ).all()
    )


# Lists -----------------------------------------------------------------------------------


def _cursor(value: Any, record_id: int) -> str:
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


def _edge(column: Any, text: str | None) -> tuple[Any, int] | None:
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
        likely(session, model.deleted_at.is_(None)),
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


async def list_page(request: web.Request) -> web.Response:
    module, viewer = _module(request)
    params = request.query
    model: Any = module.model
    sort_name, descending = _sort(module, params)
    column = getattr(model, sort_name)
    after = _edge(column, params.get("after"))
    before = _edge(column, params.get("before"))
    async with _store(request).session() as session:
        query, _ = await filtered(session, module, viewer, params)
        backwards = before is not None and after is None
        edge = before if backwards else after
        if edge is not None:
            value, edge_id = edge
            forward_down = descending != backwards  # going towards smaller values
            beyond = column < value if forward_down else column > value
            tie = model.id < edge_id if forward_down else model.id > edge_id
            query = query.where(or_(beyond, and_(column == value, tie)))
        downwards = descending != backwards
        order = (column.desc(), model.id.desc()) if downwards else (column.asc(), model.id.asc())
        rows = list((await session.scalars(query.order_by(*order).limit(PAGE_SIZE + 1))).all())
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        if backwards:
            rows.reverse()
        owners = await _user_names(session, {r.owner_id for r in rows if r.owner_id})
        refs = await _refs(session, module, rows)
        views = list(
            (
                await session.scalars(
                    select(SavedView)
                    .where(SavedView.user_id == viewer.user_id, SavedView.module == module.key)
                    .order_by(SavedView.name)
                )
            ).all()
        )
        stages = await _stages(session) if module.key == "opportunities" else []
        users = await _assignable(session, viewer)
    base = {k: v for k, v in params.items() if k not in ("after", "before")}
    has_next = more if not backwards else True
    has_prev = (after is not None) or (backwards and more)

    def link(direction: str, row: Any) -> str:
        cursor = _cursor(getattr(row, sort_name), row.id)
        return "?" + urllib.parse.urlencode({**base, direction: cursor})

    next_link = link("after", rows[-1]) if rows and has_next else None
    prev_link = link("before", rows[0]) if rows and has_prev else None
    return render(request, "records/list.html", {
        "module": module, "rows": rows, "owners": owners, "refs": refs, "params": params,
        "sort_name": sort_name, "descending": descending, "next_link": next_link,
        "prev_link": prev_link, "views": views, "stages": stages, "users": users,
        "query_string": urllib.parse.urlencode(base),
    })  # fmt: skip


async def _refs(
    session: AsyncSession, module: Module, rows: list[Any]
) -> dict[str, dict[int, str]]:
    """Names for the id columns a list shows (accounts, stages)."""
    if module.key != "opportunities":
        return {}
    accounts = {r.account_id for r in rows if r.account_id}
    return {
        "account_id": await _names(session, Account, accounts, "name"),
        "stage_id": await _names(session, PipelineStage, {r.stage_id for r in rows}, "name"),
    }


async def _assignable(session: AsyncSession, viewer: Viewer) -> list[tuple[int, str]]:
    """Users the viewer may hand records to: everyone for all-scope, else their teams."""
    query = select(User.id, User.display_name, User.username).where(User.is_active.is_(True))
    access = viewer.access
    if not (access.is_admin or access.scope == "all"):
        query = query.where(
            or_(User.id == viewer.user_id, User.team_id.in_(sorted(access.team_ids)))
        )
    rows = await session.execute(query.order_by(User.username))
    return [(uid, display or name) for uid, display, name in rows]


async def export_csv(request: web.Request) -> web.StreamResponse:
    module, viewer = _module(request, "export")
    t = viewer.t
    model: Any = module.model
    columns = [f.name for f in module.fields]
    async with _store(request).session() as session:
        query, _ = await filtered(session, module, viewer, request.query)
        rows = (await session.scalars(query.order_by(model.id).limit(EXPORT_LIMIT))).all()
    out = io.StringIO()
    out.write("\ufeff")  # so Excel reads UTF-8 and shows Chinese
    writer = csv.writer(out)
    writer.writerow(["id", *(t.gettext(module.field(c).label) for c in columns), "owner_id"])
    for row in rows:
        writer.writerow([row.id, *(_csv_value(getattr(row, c)) for c in columns), row.owner_id])
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return web.Response(
        body=out.getvalue().encode("utf-8"), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{module.key}-{stamp}.csv"'},
    )  # fmt: skip


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A cell starting with = + - @ would run as a formula in a spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


async def bulk(request: web.Request) -> web.Response:
    module, viewer = _module(request, "edit")
    form = await request.post()
    ids = [i for i in (db_int(str(v)) for v in form.getall("id", [])) if i is not None]
    action = str(form.get("action", ""))
    model: Any = module.model
    async with _store(request).session() as session, session.begin():
        with acting_as(session, viewer.user_id):
            records = (
                await session.scalars(
                    select(model).where(
                        model.id.in_(ids), model.deleted_at.is_(None), viewer.access.visible(model)
                    )
                )
            ).all()
            if action == "assign":
                owner = db_int(str(form.get("owner_id", "")))
                allowed = {uid for uid, _ in await _assignable(session, viewer)}
                if owner is None or owner not in allowed:
                    raise web.HTTPUnprocessableEntity(text=viewer.t.gettext("Choose a user."))
                team = await session.scalar(select(User.team_id).where(User.id == owner))
                for record in records:
                    record.owner_id = owner
                    record.team_id = team
            elif action == "tag":
                name = str(form.get("tag", "")).strip()[:80]
                if not name:
                    raise web.HTTPUnprocessableEntity(text=viewer.t.gettext("Name a tag."))
                for record in records:
                    await tag_record(session, module.record_type, record.id, name)
            else:
                raise web.HTTPBadRequest(text="unknown action")
    back = str(form.get("back", ""))
    raise web.HTTPSeeOther(f"/{module.key}?{back}" if back else f"/{module.key}")


async def save_view(request: web.Request) -> web.Response:
    module, viewer = _module(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:120]
    query = str(form.get("query", ""))[:2000]
    if name:
        async with _store(request).session() as session, session.begin():
            found = await session.scalar(
                select(SavedView).where(SavedView.user_id == viewer.user_id,
                                        SavedView.module == module.key, SavedView.name == name)
            )  # fmt: skip
            if found is None:
                session.add(
                    SavedView(user_id=viewer.user_id, module=module.key, name=name, query=query)
                )
            else:
                found.query = query
    raise web.HTTPSeeOther(f"/{module.key}?{query}")


async def delete_view(request: web.Request) -> web.Response:
    module, viewer = _module(request)
    view_id = request.match_info["view"]
    async with _store(request).session() as session, session.begin():
        await session.execute(
            delete(SavedView).where(
                SavedView.id == (db_int(view_id) or 0), SavedView.user_id == viewer.user_id
            )
        )
    raise web.HTTPSeeOther(f"/{module.key}")


# Detail ----------------------------------------------------------------------------------


async def detail_page(request: web.Request) -> web.Response:
    module, viewer = _module(request)
    kinds = [k for k in request.query.getall("kind", []) if k in timeline_kinds(module.record_type)]
    before = _edge(ActivityLink.occurred_at, request.query.get("older"))
    async with _store(request).session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        related = await _related(session, module, record, viewer.access)
        owner = await _user_names(session, {record.owner_id} if record.owner_id else set())
        tags = await tags_of(session, module.record_type, record.id)
        entries, older = await timeline_entries(
            request, session, module.record_type, record.id, kinds or None, before
        )
    older_link = None
    if older is not None:
        query = [("kind", k) for k in kinds] + [("older", _cursor(*older))]
        older_link = "?" + urllib.parse.urlencode(query)
    return render(request, "records/detail.html", {
        "module": module, "record": record, "related": related, "tags": tags,
        "owner": owner.get(record.owner_id or 0, ""), "entries": entries, "kinds": kinds,
        "older_link": older_link, "title": module.display(record),
        "all_kinds": timeline_kinds(module.record_type),
    })  # fmt: skip


async def _related(
    session: AsyncSession, module: Module, record: Any, access: Access
) -> dict[str, Any]:
    """The related lists vtiger users know, each limited to what the viewer may see."""
    related: dict[str, Any] = {}
    newest = Opportunity.created_at.desc()
    live_opps = select(Opportunity).where(
        Opportunity.deleted_at.is_(None), access.visible(Opportunity)
    )
    if module.key == "accounts":
        related["contacts"] = (await session.scalars(
            select(Contact).join(AccountContact, AccountContact.contact_id == Contact.id)
            .where(AccountContact.account_id == record.id, Contact.deleted_at.is_(None),
                   access.visible(Contact)).order_by(Contact.last_name)
        )).all()  # fmt: skip
        related["opportunities"] = (await session.scalars(
            live_opps.where(Opportunity.account_id == record.id).order_by(newest)
        )).all()  # fmt: skip
    elif module.key == "contacts":
        related["accounts"] = (await session.scalars(
            select(Account).join(AccountContact, AccountContact.account_id == Account.id)
            .where(AccountContact.contact_id == record.id, Account.deleted_at.is_(None),
                   access.visible(Account)).order_by(Account.name)
        )).all()  # fmt: skip
        related["opportunities"] = (await session.scalars(
            live_opps.where(Opportunity.contact_id == record.id).order_by(newest)
        )).all()  # fmt: skip
    elif module.key == "opportunities":
        stages = {s.id: s for s in await session.scalars(select(PipelineStage))}
        related["stage"] = stages.get(record.stage_id)
        related["durations"] = await stage_durations(session, record.id)
        if record.account_id:
            related["account"] = await session.get(Account, record.account_id)
        if record.contact_id:
            related["contact"] = await session.get(Contact, record.contact_id)
    elif module.key == "leads" and record.converted_at is not None:
        made = (("accounts", record.converted_account_id),
                ("contacts", record.converted_contact_id),
                ("opportunities", record.converted_opportunity_id))  # fmt: skip
        related["converted"] = [(kind, rid) for kind, rid in made if rid]
    return related


async def add_note(request: web.Request) -> web.Response:
    module, viewer = _module(request)
    if not viewer.access.can("activities", "create"):
        raise web.HTTPForbidden()
    form = await request.post()
    text = str(form.get("note", "")).strip()
    async with _store(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        if text:
            with acting_as(session, viewer.user_id):
                await log_activity(
                    session, kind=ActivityKind.NOTE, records=[(module.record_type, record.id)],
                    subject=text.splitlines()[0][:200], body=text[:20000],
                    owner_id=viewer.user_id,
                )  # fmt: skip
    raise web.HTTPSeeOther(f"/{module.key}/{request.match_info['id']}")


# Forms -----------------------------------------------------------------------------------


def _form_values(module: Module, record: Any | None, prefill: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in module.fields:
        value = getattr(record, f.name) if record is not None else prefill.get(f.name, "")
        values[f.name] = "" if value is None else value
    if record is None and module.key == "leads" and not values.get("status"):
        values["status"] = LeadStatus.NEW.value
    if record is None and module.key == "opportunities" and not values.get("currency"):
        values["currency"] = "CNY"
    return values


async def _choices(
    session: AsyncSession, module: Module, viewer: Viewer
) -> dict[str, list[tuple[int, str]]]:
    """Options for the record pickers of a form (accounts, contacts in scope; a few hundred)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for f in module.fields:
        if f.kind != "ref" or f.ref is None:
            continue
        target = MODULES[f.ref]
        model: Any = target.model
        order = model.name if target.key == "accounts" else model.last_name
        rows = (await session.scalars(
            select(model).where(model.deleted_at.is_(None), viewer.access.visible(model))
            .order_by(order).limit(500)
        )).all()  # fmt: skip
        out[f.name] = [(r.id, target.display(r)) for r in rows]
    return out


async def new_form(request: web.Request) -> web.Response:
    module, viewer = _module(request, "create")
    async with _store(request).session() as session:
        choices = await _choices(session, module, viewer)
    return render(request, "records/form.html", {
        "module": module, "record": None, "values": _form_values(module, None, request.query),
        "errors": {}, "duplicates": [], "choices": choices,
    })  # fmt: skip


async def create(request: web.Request) -> web.Response:
    module, viewer = _module(request, "create")
    form = await request.post()
    values, errors = validate(module, form, viewer.t.gettext)
    async with _store(request).session() as session, session.begin():
        await _check_refs(session, module, viewer, values, errors)
        if errors:
            return render(request, "records/form.html", {
                "module": module, "record": None, "values": {**dict(form), **_shown(values)},
                "errors": errors, "duplicates": [],
                "choices": await _choices(session, module, viewer),
            }, status=422)  # fmt: skip
        if module.record_type in ("lead", "contact") and not form.get("confirm_duplicate"):
            duplicates = await _duplicates_of(session, values, viewer.access)
            if duplicates:
                return render(request, "records/form.html", {
                    "module": module, "record": None, "values": {**dict(form), **_shown(values)},
                    "errors": {}, "duplicates": duplicates,
                    "choices": await _choices(session, module, viewer),
                }, status=409)  # fmt: skip
        with acting_as(session, viewer.user_id):
            record: Any = module.model(
                **values, owner_id=viewer.user_id, team_id=viewer.access.team_id
            )
            if module.key == "opportunities":
                stage = await first_open_stage(session)
                record.stage_id, record.probability = stage.id, stage.probability
            session.add(record)
            await session.flush()
            await index_record(session, record)
            if module.key == "opportunities":
                enter_stage(session, record, stage, user_id=viewer.user_id, now=utcnow())
    raise web.HTTPSeeOther(f"/{module.key}/{record.id}")


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    return {k: "" if v is None else v for k, v in values.items()}


async def _duplicates_of(
    session: AsyncSession, values: dict[str, Any], access: Access
) -> list[dict[str, Any]]:
    """Leads and contacts that already have this email address or phone number."""
    found: dict[tuple[str, int], list[str]] = {}
    people = ["lead", "contact"]
    if values.get("email"):
        for match in await lookup_email(session, values["email"], people):
            found.setdefault((match.record_type, match.record_id), []).append(values["email"])
    for name in ("phone", "mobile"):
        if values.get(name):
            for match in await lookup_phone(session, values[name], record_types=people):
                found.setdefault((match.record_type, match.record_id), []).append(values[name])
    rows = []
    for (record_type, record_id), reasons in sorted(found.items()):
        module = BY_TYPE[record_type]
        record: Any = await session.get(module.model, record_id)
        if record is None or record.deleted_at is not None:
            continue
        visible = access.may_see(record)
        rows.append({"link": f"/{module.key}/{record_id}" if visible else None,
                     "name": module.display(record) if visible else "",
                     "module": module, "reasons": reasons})  # fmt: skip
    return rows


async def _check_refs(
    session: AsyncSession,
    module: Module,
    viewer: Viewer,
    values: dict[str, Any],
    errors: dict[str, str],
) -> None:
    """A picked account or contact must exist and be in the viewer's scope."""
    for f in module.fields:
        if f.kind == "ref" and f.ref and values.get(f.name) is not None and f.name not in errors:
            target = MODULES[f.ref]
            record = await session.get(target.model, values[f.name])
            if record is None or record.deleted_at is not None or not viewer.access.may_see(record):  # type: ignore[attr-defined]
                errors[f.name] = viewer.t.gettext("Choose a record.")


async def edit_form(request: web.Request) -> web.Response:
    module, viewer = _module(request, "edit")
    async with _store(request).session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        choices = await _choices(session, module, viewer)
    return render(request, "records/form.html", {
        "module": module, "record": record, "values": _form_values(module, record, {}),
        "errors": {}, "duplicates": [], "choices": choices,
    })  # fmt: skip


async def update(request: web.Request) -> web.Response:
    module, viewer = _module(request, "edit")
    form = await request.post()
    values, errors = validate(module, form, viewer.t.gettext)
    async with _store(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        await _check_refs(session, module, viewer, values, errors)
        if errors:
            return render(request, "records/form.html", {
                "module": module, "record": record, "values": {**dict(form), **_shown(values)},
                "errors": errors, "duplicates": [],
                "choices": await _choices(session, module, viewer),
            }, status=422)  # fmt: skip
        with acting_as(session, viewer.user_id):
            for name, value in values.items():
                setattr(record, name, value)
            await session.flush()
            await index_record(session, record)
    raise web.HTTPSeeOther(f"/{module.key}/{record.id}")


async def remove(request: web.Request) -> web.Response:
    module, viewer = _module(request, "delete")
    async with _store(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        with acting_as(session, viewer.user_id):
            await soft_delete(session, module.record_type, record.id, viewer.user_id)
    raise web.HTTPSeeOther(f"/{module.key}")


# Lead conversion -------------------------------------------------------------------------


async def convert_form(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    if not (viewer.access.can("leads", "edit") and viewer.access.can("contacts", "create")):
        raise web.HTTPForbidden()
    async with _store(request).session() as session:
        lead = await load_visible(
            session, MODULES["leads"], viewer.access, request.match_info["id"]
        )
        accounts = (await _choices(session, MODULES["opportunities"], viewer)).get("account_id", [])
    values = {"opportunity_name": lead.company or "", "account_id": "", "create_opportunity": "",
              "amount": "", "expected_close": ""}  # fmt: skip
    return render(request, "records/convert.html",
                  {"lead": lead, "accounts": accounts, "values": values, "errors": {}})  # fmt: skip


async def convert(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    t = viewer.t
    if not (viewer.access.can("leads", "edit") and viewer.access.can("contacts", "create")):
        raise web.HTTPForbidden()
    form = await request.post()
    errors: dict[str, str] = {}
    account_id = str(form.get("account_id", ""))
    create_opportunity = bool(form.get("create_opportunity"))
    amount = None
    if create_opportunity and str(form.get("amount", "")).strip():
        try:
            amount = Decimal(str(form.get("amount")).replace(",", ""))
            if amount < 0 or not amount.is_finite():
                raise ArithmeticError
        except ArithmeticError:
            errors["amount"] = t.gettext("Not an amount.")
    close = None
    if create_opportunity and str(form.get("expected_close", "")).strip():
        try:
            close = dt.date.fromisoformat(str(form.get("expected_close")))
        except ValueError:
            errors["expected_close"] = t.gettext("A date like 2026-12-31.")
    async with _store(request).session() as session, session.begin():
        lead = await load_visible(
            session, MODULES["leads"], viewer.access, request.match_info["id"]
        )
        accounts = (await _choices(session, MODULES["opportunities"], viewer)).get("account_id", [])
        if account_id and int(account_id) not in {aid for aid, _ in accounts}:
            errors["account_id"] = t.gettext("Choose a record.")
        if not errors:
            try:
                with acting_as(session, viewer.user_id):
                    result = await convert_lead(
                        session, lead.id, user_id=viewer.user_id,
                        account_id=int(account_id) if account_id else None,
                        create_opportunity=create_opportunity,
                        opportunity_name=str(form.get("opportunity_name", "")).strip() or None,
                        amount=amount, expected_close=close,
                    )  # fmt: skip
            except ValidationError as err:
                errors.update({k: str(v) for k, v in err.errors.items()})
        if errors:
            return render(request, "records/convert.html",
                          {"lead": lead, "accounts": accounts, "values": dict(form),
                           "errors": errors}, status=422)  # fmt: skip
    raise web.HTTPSeeOther(f"/contacts/{result.contact.id}")


def add_records_routes(app: web.Application, store: Store) -> None:
    app[RECORDS_STORE_KEY] = store
    m = MODULE_PATTERN
    app.router.add_get(f"/{m}", list_page)
    app.router.add_get(f"/{m}/export.csv", export_csv)
    app.router.add_post(f"/{m}/bulk", bulk)
    app.router.add_post(f"/{m}/views", save_view)
    app.router.add_post(f"/{m}/views/{{view:\\d+}}/delete", delete_view)
    app.router.add_get(f"/{m}/new", new_form)
    app.router.add_post(f"/{m}/new", create)
    app.router.add_get(f"/{m}/{{id:\\d+}}", detail_page)
    app.router.add_get(f"/{m}/{{id:\\d+}}/edit", edit_form)
    app.router.add_post(f"/{m}/{{id:\\d+}}/edit", update)
    app.router.add_post(f"/{m}/{{id:\\d+}}/delete", remove)
    app.router.add_post(f"/{m}/{{id:\\d+}}/notes", add_note)
    app.router.add_get("/leads/{id:\\d+}/convert", convert_form)
    app.router.add_post("/leads/{id:\\d+}/convert", convert)
