"""New and edit forms for leads, contacts, accounts and opportunities; delete; lead conversion.

A bad value is shown beside its field (422) with everything typed kept; a new
lead or contact whose email address or phone number is already known shows the
matches first (409) and is created only when the user confirms.  A new record
belongs to the viewer and their team unless they hand it to someone else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import Access
from store.base import utcnow
from store.errors import ValidationError
from store.identity import index_record, lookup_email, lookup_phone
from store.leads import convert_lead
from store.models import Lead, LeadStatus, User
from store.pipeline import REQUIRED, enter_stage, first_open_stage
from store.records import acting_as
from store.recycle import soft_delete
from web.auth import Viewer, permitted
from web.modules import BY_TYPE, MODULES, Module, _parse, db_int, validate
from web.record_query import assignable, filtered, load_visible, module_of, records_store
from web.render import render

# How many records a picker offers before the user narrows it by typing (records.js).
PICKER_SIZE = 200


# Forms -----------------------------------------------------------------------------------


def _form_values(
    module: Module, record: Any | None, prefill: Mapping[str, Any], viewer: Viewer
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in module.fields:
        value = getattr(record, f.name) if record is not None else prefill.get(f.name, "")
        values[f.name] = "" if value is None else value
    values["owner_id"] = record.owner_id if record is not None else viewer.user_id
    if record is None and module.key == "leads" and not values.get("status"):
        values["status"] = LeadStatus.NEW.value
    if record is None and module.key == "opportunities" and not values.get("currency"):
        values["currency"] = "CNY"
    return values


async def picker_options(
    session: AsyncSession, target: Module, viewer: Viewer, *, chosen: Any = None
) -> list[tuple[int, str]]:
    """Records of ``target`` in scope for a picker, by name, with the chosen one in any case.

    A picker lists a few hundred; records.js asks ``/<module>/lookup`` as the
    user types, and the server checks any id it is sent, listed or not.
    """
    model: Any = target.model
    order = getattr(model, target.names[0])
    query, _ = await filtered(session, target, viewer, {})  # the lists' index-friendly query
    rows = list((await session.scalars(query.order_by(order, model.id).limit(PICKER_SIZE))).all())
    chosen_id = db_int(str(chosen or ""))
    if chosen_id is not None and all(r.id != chosen_id for r in rows):
        picked: Any = await session.get(model, chosen_id)
        if picked is not None and picked.deleted_at is None and viewer.access.may_see(picked):
            rows.insert(0, picked)
    return [(r.id, target.display(r)) for r in rows]


async def _form_page(
    request: web.Request, session: AsyncSession, module: Module, viewer: Viewer, *,
    record: Any, values: Mapping[str, Any], errors: Mapping[str, str],
    duplicates: list[dict[str, Any]] | None = None, status: int = 200,
) -> web.Response:  # fmt: skip
    choices = {
        f.name: await picker_options(session, MODULES[f.ref], viewer, chosen=values.get(f.name))
        for f in module.fields
        if f.kind == "ref" and f.ref
    }
    users = await assignable(session, viewer)
    owner = db_int(str(values.get("owner_id", "")))
    if owner is not None and all(uid != owner for uid, _ in users):
        # The record's owner may be away or in another team: still shown, still kept.
        name = await session.scalar(select(User.username).where(User.id == owner))
        users.insert(0, (owner, name or f"#{owner}"))
    return render(request, "records/form.html", {
        "module": module, "record": record, "values": values, "errors": errors,
        "duplicates": duplicates or [], "choices": choices, "users": users,
    }, status=status)  # fmt: skip


async def new_form(request: web.Request) -> web.Response:
    module, viewer = module_of(request, "create")
    async with records_store(request).session() as session:
        values = _form_values(module, None, request.query, viewer)
        return await _form_page(request, session, module, viewer, record=None, values=values,
                                errors={})  # fmt: skip


async def _owner_of(
    session: AsyncSession, viewer: Viewer, form: Mapping[str, Any], current: int | None,
    errors: dict[str, str],
) -> int | None:  # fmt: skip
    """The owner the form names: someone the viewer may hand records to, or unchanged.

    Nothing named keeps the current owner (the viewer, for a new record).
    """
    raw = str(form.get("owner_id", "") or "")
    if not raw:
        return current if current is not None else viewer.user_id
    owner = db_int(raw)
    allowed = {uid for uid, _ in await assignable(session, viewer)}
    if owner is None or (owner not in allowed and owner != current):
        errors["owner_id"] = viewer.t.gettext("Choose a user.")
        return current
    return owner


async def _team_of(session: AsyncSession, viewer: Viewer, owner: int) -> int | None:
    if owner == viewer.user_id:
        return viewer.access.team_id
    return await session.scalar(select(User.team_id).where(User.id == owner))


async def create(request: web.Request) -> web.Response:
    module, viewer = module_of(request, "create")
    form = await request.post()
    values, errors = validate(module, form, viewer.t.gettext)
    async with records_store(request).session() as session, session.begin():
        await _check_refs(session, module, viewer, values, errors)
        owner = await _owner_of(session, viewer, form, None, errors)
        shown = {**dict(form), **_shown(values)}
        if errors:
            return await _form_page(request, session, module, viewer, record=None,
                                    values=shown, errors=errors, status=422)  # fmt: skip
        if module.record_type in ("lead", "contact") and not form.get("confirm_duplicate"):
            duplicates = await _duplicates_of(session, values, viewer.access)
            if duplicates:
                return await _form_page(request, session, module, viewer, record=None,
                                        values=shown, errors={}, duplicates=duplicates,
                                        status=409)  # fmt: skip
        with acting_as(session, viewer.user_id):
            owner = owner or viewer.user_id
            team = await _team_of(session, viewer, owner)
            record: Any = module.model(**values, owner_id=owner, team_id=team)
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
    """Leads and contacts that already have this email address or phone number.

    The same identity index and keys as ``store.dedupe.find_duplicates``, which
    needs a stored record; this looks before one is made.
    """
    found: dict[tuple[str, int], list[str]] = {}
    people = ["lead", "contact"]
    if values.get("email"):
        for match in await lookup_email(session, values["email"], people):
            found.setdefault((match.record_type, match.record_id), []).append(values["email"])
    for name in ("phone", "mobile"):
        if values.get(name):
            for match in await lookup_phone(session, values[name], record_types=people):
                found.setdefault((match.record_type, match.record_id), []).append(values[name])
    return await duplicate_rows(session, found, access)


async def duplicate_rows(
    session: AsyncSession, found: Mapping[tuple[str, int], list[str]], access: Access
) -> list[dict[str, Any]]:
    """Live matches for a page: a link and name where the viewer may see them, else neither."""
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
            record: Any = await session.get(target.model, values[f.name])
            if record is None or record.deleted_at is not None or not viewer.access.may_see(record):
                errors[f.name] = viewer.t.gettext("Choose a record.")


async def edit_form(request: web.Request) -> web.Response:
    module, viewer = module_of(request, "edit")
    async with records_store(request).session() as session:
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        values = _form_values(module, record, {}, viewer)
        return await _form_page(request, session, module, viewer, record=record, values=values,
                                errors={})  # fmt: skip


async def update(request: web.Request) -> web.Response:
    module, viewer = module_of(request, "edit")
    form = await request.post()
    values, errors = validate(module, form, viewer.t.gettext)
    async with records_store(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        await _check_refs(session, module, viewer, values, errors)
        owner = await _owner_of(session, viewer, form, record.owner_id, errors)
        if errors:
            return await _form_page(request, session, module, viewer, record=record,
                                    values={**dict(form), **_shown(values)}, errors=errors,
                                    status=422)  # fmt: skip
        with acting_as(session, viewer.user_id):
            for name, value in values.items():
                setattr(record, name, value)
            if owner != record.owner_id and owner is not None:
                record.owner_id = owner
                record.team_id = await _team_of(session, viewer, owner)
            await session.flush()
            await index_record(session, record)
    raise web.HTTPSeeOther(f"/{module.key}/{record.id}")


async def remove(request: web.Request) -> web.Response:
    """Into the recycle bin (``store.recycle``), whence it can be restored."""
    module, viewer = module_of(request, "delete")
    async with records_store(request).session() as session, session.begin():
        record = await load_visible(session, module, viewer.access, request.match_info["id"])
        with acting_as(session, viewer.user_id):
            await soft_delete(session, module.record_type, record.id, viewer.user_id)
    raise web.HTTPSeeOther(f"/{module.key}")


# Lead conversion -------------------------------------------------------------------------


def _may_convert(request: web.Request) -> Viewer:
    return permitted(request, ("leads", "edit"), ("contacts", "create"))


async def _convertible(request: web.Request, session: AsyncSession, viewer: Viewer) -> Lead:
    lead: Lead = await load_visible(
        session, MODULES["leads"], viewer.access, request.match_info["id"]
    )
    if lead.status == LeadStatus.CONVERTED:
        # Converted already (perhaps by a colleague a moment ago): its page links the results.
        raise web.HTTPSeeOther(f"/leads/{lead.id}")
    return lead


async def _convert_page(
    request: web.Request, session: AsyncSession, viewer: Viewer, lead: Lead,
    values: Mapping[str, Any], errors: Mapping[str, str], status: int = 200,
) -> web.Response:  # fmt: skip
    accounts = await picker_options(
        session, MODULES["accounts"], viewer, chosen=values.get("account_id")
    )
    return render(request, "records/convert.html",
                  {"lead": lead, "accounts": accounts, "values": values, "errors": errors},
                  status=status)  # fmt: skip


async def convert_form(request: web.Request) -> web.Response:
    viewer = _may_convert(request)
    async with records_store(request).session() as session:
        lead = await _convertible(request, session, viewer)
        values = {"account_name": lead.company or lead.display_name, "account_id": "",
                  "create_opportunity": "", "opportunity_name": lead.company or "",
                  "amount": "", "expected_close": ""}  # fmt: skip
        return await _convert_page(request, session, viewer, lead, values, {})


def _conversion_values(
    form: Mapping[str, Any], gettext: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """The conversion form's choices, parsed as the record forms parse theirs."""
    deals = MODULES["opportunities"]
    values: dict[str, Any] = {
        "account_id": None, "amount": None, "expected_close": None,
        "create_opportunity": bool(form.get("create_opportunity")),
        "account_name": str(form.get("account_name", "")).strip()[:255],
        "opportunity_name": str(form.get("opportunity_name", "")).strip()[:255] or None,
    }  # fmt: skip
    errors: dict[str, str] = {}
    if str(form.get("account_id", "")).strip():
        values["account_id"] = db_int(str(form.get("account_id", "")).strip())
        if values["account_id"] is None:
            errors["account_id"] = gettext("Choose a record.")
    if values["create_opportunity"]:
        for name in ("amount", "expected_close"):
            raw = str(form.get(name, "")).strip()
            if raw:
                try:
                    values[name] = _parse(deals.field(name), raw, gettext)
                except ValueError as err:
                    errors[name] = str(err)
    return values, errors


async def convert(request: web.Request) -> web.Response:
    viewer = _may_convert(request)
    t = viewer.t
    form = await request.post()
    values, errors = _conversion_values(form, t.gettext)
    async with records_store(request).session() as session, session.begin():
        lead = await _convertible(request, session, viewer)
        if values["account_id"] is not None:
            account: Any = await session.get(MODULES["accounts"].model, values["account_id"])
            if (
                account is None
                or account.deleted_at is not None
                or not viewer.access.may_see(account)
            ):
                errors["account_id"] = t.gettext("Choose a record.")
        new_name = values["account_name"] if values["account_id"] is None else None
        if not errors:
            try:
                with acting_as(session, viewer.user_id):
                    result = await convert_lead(
                        session, lead.id, user_id=viewer.user_id,
                        account_id=values["account_id"],
                        create_opportunity=values["create_opportunity"],
                        opportunity_name=values["opportunity_name"] or new_name,
                        amount=values["amount"], expected_close=values["expected_close"],
                    )  # fmt: skip
                    if new_name:
                        # The new account takes the name typed (convert_lead names it after
                        # the lead's company, or the person when there is none).
                        result.account.name = new_name
            except ValidationError as err:
                errors.update({
                    name: t.gettext("Needed to enter this stage.") if message == REQUIRED
                    else str(message)
                    for name, message in err.errors.items()
                })  # fmt: skip
        if errors:
            return await _convert_page(request, session, viewer, lead, dict(form), errors, 422)
    raise web.HTTPSeeOther(f"/contacts/{result.contact.id}")
