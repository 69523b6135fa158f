"""Leads, contacts, accounts and opportunities: lists, detail pages, bulk actions, export.

One set of handlers serves the four modules (``web/modules.py``); the forms
and lead conversion are in ``web/record_forms.py``, the scoped queries in
``web/record_query.py``.  Lists page by keyset (the sort value and id of the
edge row), never by offset, so they stay fast and right with a million rows
and while rows arrive.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import urllib.parse
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import Access
from store.activities import log_activity
from store.base import Base
from store.db import Store
from store.dedupe import find_duplicates
from store.models import (
    Account,
    AccountContact,
    ActivityKind,
    ActivityLink,
    Contact,
    Opportunity,
    PipelineStage,
    SavedView,
    User,
)
from store.pipeline import stage_durations
from store.records import acting_as
from store.tags import tag_record, tags_of
from web.compose import add_compose_routes, compose_offered
from web.modules import MODULES, Module, db_int
from web.record_forms import (
    convert,
    convert_form,
    create,
    duplicate_rows,
    edit_form,
    new_form,
    remove,
    update,
)
from web.record_query import (
    RECORDS_STORE_KEY,
    _cursor,
    _sort,
    assignable,
    filtered,
    keyset_edge,
    load_visible,
    module_of,
    records_store,
    user_names,
)
from web.render import render
from web.timeline import timeline_entries, timeline_kinds

PAGE_SIZE = 50
EXPORT_LIMIT = 100_000
LOOKUP_SIZE = 20
BULK_LIMIT = 500  # a page shows 50; more is not a person ticking boxes
MODULE_PATTERN = "{module:leads|contacts|accounts|opportunities}"


async def _names(
    session: AsyncSession, model: type[Base], ids: set[int], attr: str
) -> dict[int, str]:
    if not ids:
        return {}
    column = getattr(model, attr)
    rows = await session.execute(select(model.id, column).where(model.id.in_(sorted(ids))))  # type: ignore[attr-defined]
    return {rid: name for rid, name in rows}


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


async def list_page(request: web.Request) -> web.Response:
    module, viewer = module_of(request)
    params = request.query
    model: Any = module.model
    sort_name, descending = _sort(module, params)
    column = getattr(model, sort_name)
    after = keyset_edge(column, params.get("after"))
    before = keyset_edge(column, params.get("before"))
    async with records_store(request).session() as session:
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
        owners = await user_names(session, {r.owner_id for r in rows if r.owner_id})
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
        users = await assignable(session, viewer)
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


async def export_csv(request: web.Request) -> web.StreamResponse:
    """The list's records (its search and filters, the viewer's scope) as CSV for Excel."""
    module, viewer = module_of(request, "export")
    t = viewer.t
    model: Any = module.model
    names = [f.name for f in module.fields]
    async with records_store(request).session() as session:
        _, conditions = await filtered(session, module, viewer, request.query)
        # Plain rows, not ORM objects: a hundred thousand of them stay cheap.
        columns = [model.id, *(getattr(model, n) for n in names), model.owner_id, model.created_at]
        rows = (
            await session.execute(
                select(*columns).where(*conditions).order_by(model.id).limit(EXPORT_LIMIT)
            )
        ).all()
        owners = await user_names(session, {row[-2] for row in rows if row[-2]})
    out = io.StringIO()
    out.write("\ufeff")  # so Excel reads UTF-8 and shows Chinese
    writer = csv.writer(out)
    writer.writerow(["id", *(t.gettext(module.field(n).label) for n in names),
                     t.gettext("Owner"), t.gettext("Created")])  # fmt: skip
    for row in rows:
        *values, owner, created = row[1:]
        writer.writerow([row[0], *(_csv_value(v) for v in values), owners.get(owner or 0, ""),
                         t.local(created).strftime("%Y-%m-%d %H:%M")])  # fmt: skip
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
    module, viewer = module_of(request, "edit")
    form = await request.post()
    ids = [i for i in (db_int(str(v)) for v in form.getall("id", [])) if i is not None]
    ids = ids[:BULK_LIMIT]
    action = str(form.get("action", ""))
    model: Any = module.model
    async with records_store(request).session() as session, session.begin():
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
                allowed = {uid for uid, _ in await assignable(session, viewer)}
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
    raise web.HTTPSeeOther(_list_url(module, str(form.get("back", ""))))


async def save_view(request: web.Request) -> web.Response:
    module, viewer = module_of(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:120]
    query = _query_only(str(form.get("query", "")))[:2000]
    if name:
        async with records_store(request).session() as session, session.begin():
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
    raise web.HTTPSeeOther(_list_url(module, query))


def _query_only(text: str) -> str:
    """A list's query string as we would write it: nothing else can ride along into a URL."""
    pairs = urllib.parse.parse_qsl(text.lstrip("?"), keep_blank_values=False)
    return urllib.parse.urlencode([(k, v) for k, v in pairs if k not in ("after", "before")])


def _list_url(module: Module, query: str) -> str:
    kept = _query_only(query)
    return f"/{module.key}?{kept}" if kept else f"/{module.key}"


async def delete_view(request: web.Request) -> web.Response:
    module, viewer = module_of(request)
    view_id = request.match_info["view"]
    async with records_store(request).session() as session, session.begin():
        await session.execute(
            delete(SavedView).where(
                SavedView.id == (db_int(view_id) or 0), SavedView.user_id == viewer.user_id
            )
        )
    raise web.HTTPSeeOther(f"/{module.key}")


async def lookup(request: web.Request) -> web.Response:
    """Records in scope matching ``q`` (name prefix, email, phone) as JSON, for record pickers."""
    module, viewer = module_of(request)
    model: Any = module.model
    order = getattr(model, module.names[0])
    async with records_store(request).session() as session:
        query, _ = await filtered(session, module, viewer, {"q": request.query.get("q", "")})
        rows = (await session.scalars(query.order_by(order, model.id).limit(LOOKUP_SIZE))).all()
    return web.json_response([{"id": r.id, "name": module.display(r)} for r in rows])


# Detail ----------------------------------------------------------------------------------


async def detail_page(request: web.Request) -> web.Response:
    module, viewer = module_of(request)
    kinds = [k for k in request.query.getall("kind", []) if k in timeline_kinds(module.record_type)]
    before = keyset_edge(ActivityLink.occurred_at, request.query.get("older"))
    async with records_store(request).session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        related = await _related(session, module, record, viewer.access)
        owner = await user_names(session, {record.owner_id} if record.owner_id else set())
        tags = await tags_of(session, module.record_type, record.id)
        entries, older = await timeline_entries(
            request, session, module.record_type, record.id, kinds or None, before
        )
        duplicates = []
        if module.record_type in ("lead", "contact"):
            found = await find_duplicates(session, module.record_type, record.id)
            duplicates = await duplicate_rows(
                session, {(m.record_type, m.record_id): m.reasons for m in found}, viewer.access
            )
    older_link = None
    if older is not None:
        query = [("kind", k) for k in kinds] + [("older", _cursor(*older))]
        older_link = "?" + urllib.parse.urlencode(query)
    return render(request, "records/detail.html", {
        "module": module, "record": record, "related": related, "tags": tags,
        "owner": owner.get(record.owner_id or 0, ""), "entries": entries, "kinds": kinds,
        "older_link": older_link, "title": module.display(record),
        "all_kinds": timeline_kinds(module.record_type), "duplicates": duplicates,
        "can_mail": compose_offered(request, module, viewer),
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
        made = (("contacts", record.converted_contact_id),
                ("accounts", record.converted_account_id),
                ("opportunities", record.converted_opportunity_id))  # fmt: skip
        related["converted"] = []
        for key, made_id in made:
            target = MODULES[key]
            found: Any = await session.get(target.model, made_id) if made_id else None
            if found is not None and found.deleted_at is None and access.may_see(found):
                related["converted"].append((target, made_id, target.display(found)))
    return related


async def add_note(request: web.Request) -> web.Response:
    module, viewer = module_of(request)
    if not viewer.access.can("activities", "create"):
        raise web.HTTPForbidden()
    form = await request.post()
    text = str(form.get("note", "")).strip()
    async with records_store(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        if text:
            with acting_as(session, viewer.user_id):
                await log_activity(
                    session, kind=ActivityKind.NOTE, records=[(module.record_type, record.id)],
                    subject=text.splitlines()[0][:200], body=text[:20000],
                    owner_id=viewer.user_id,
                )  # fmt: skip
    raise web.HTTPSeeOther(f"/{module.key}/{request.match_info['id']}")


def add_records_routes(app: web.Application, store: Store) -> None:
    app[RECORDS_STORE_KEY] = store
    m = MODULE_PATTERN
    app.router.add_get(f"/{m}", list_page)
    app.router.add_get(f"/{m}/export.csv", export_csv)
    app.router.add_get(f"/{m}/lookup", lookup)
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
    add_compose_routes(app, m)
    app.router.add_get("/leads/{id:\\d+}/convert", convert_form)
    app.router.add_post("/leads/{id:\\d+}/convert", convert)
