"""The JSON API's actions: log an activity, convert a lead, move a deal, dial a number.

Each checks what the page doing the same checks: the role's permission, and
that every record named is in the caller's scope (a record outside it is a
problem of the body, 422, or 404 when it is the one in the path).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import log_activity
from store.leads import convert_lead
from store.models import ActivityKind, ActivityStatus
from store.pipeline import advance_stage
from store.records import acting_as
from store.recurrence import Rule, start_series
from store.reminders import set_reminder
from web.api_models import (
    RECORDS,
    Activity,
    ActivityCreate,
    Converted,
    Dial,
    Dialling,
    LeadConvert,
    StageMove,
)
from web.api_spec import (
    Operation,
    allowed,
    body_of,
    caller,
    check_refs,
    problems,
    refusals,
    refuse,
    shown,
    store_of,
)
from web.auth import Viewer
from web.modules import BY_TYPE, MODULES
from web.phone import request_dial
from web.record_query import load_visible

PLANNED_KINDS = {ActivityKind.TASK.value, ActivityKind.MEETING.value}


async def visible_ref(session: AsyncSession, viewer: Viewer, ref: str) -> tuple[str, int] | None:
    """``type:id`` as a record the caller may see, else None."""
    record_type, _, number = ref.partition(":")
    module = BY_TYPE.get(record_type)
    if module is None or not viewer.access.can(module.key, "view"):
        return None
    try:
        record = await load_visible(session, module, viewer.access, number)
    except web.HTTPNotFound:
        return None
    return record_type, record.id


async def create_activity(request: web.Request) -> web.Response:
    viewer = await allowed(request, "activities", "create")
    body = await body_of(request, ActivityCreate)
    async with store_of(request).session() as session, session.begin():
        linked, errors = [], {}
        for n, ref in enumerate(body.records):
            found = await visible_ref(session, viewer, ref)
            if found is None:
                errors[f"records.{n}"] = "no such record in your scope"
            else:
                linked.append(found)
        rule = None
        if body.repeat is not None:
            try:
                rule = Rule(body.repeat.freq, body.repeat.interval, count=body.repeat.count,
                            until=body.repeat.until)  # fmt: skip
            except ValueError:
                errors["repeat"] = "a rule ends after a count or on a day, not both"
        timed = body.due_at if body.kind == "task" else body.occurred_at
        if (body.remind_minutes is not None or rule is not None) and timed is None:
            field = "remind_minutes" if body.remind_minutes is not None else "repeat"
            errors[field] = "needs a due_at (a task) or an occurred_at (the rest)"
        if body.ends_at and body.occurred_at and body.ends_at < body.occurred_at:
            errors["ends_at"] = "before occurred_at"
        if errors:
            raise problems(errors)
        planned = body.kind in PLANNED_KINDS
        status = body.status or (ActivityStatus.PLANNED if planned else ActivityStatus.DONE)
        with acting_as(session, viewer.user_id):
            activity = await log_activity(
                session, kind=body.kind, subject=body.subject, body=body.body, records=linked,
                occurred_at=body.occurred_at, owner_id=viewer.user_id, due_at=body.due_at,
                status=ActivityStatus(status), ends_at=body.ends_at, location=body.location,
            )  # fmt: skip
            start_series(activity, rule)
            set_reminder(activity, body.remind_minutes)
            await session.flush()
        answer = Activity.model_validate(activity).model_dump(mode="json")
    return web.json_response(answer, status=201)


async def convert(request: web.Request) -> web.Response:
    """As the conversion page: a contact, a new or chosen account, perhaps a deal."""
    viewer = await allowed(request, "leads", "edit")
    if not viewer.access.can("contacts", "create"):
        raise refuse(403, "your role may not create contacts")
    body = await body_of(request, LeadConvert)
    async with store_of(request).session() as session, session.begin():
        lead = await load_visible(session, MODULES["leads"], viewer.access,
                                  request.match_info["id"])  # fmt: skip
        if body.account_id is not None:
            account: Any = await session.get(MODULES["accounts"].model, body.account_id)
            if (
                account is None
                or account.deleted_at is not None
                or not viewer.access.may_see(account)
            ):
                raise problems({"account_id": "Choose a record."})
        new_name = body.account_name if body.account_id is None else None
        with acting_as(session, viewer.user_id):
            result = await convert_lead(
                session, lead.id, user_id=viewer.user_id, account_id=body.account_id,
                create_opportunity=body.create_opportunity,
                opportunity_name=body.opportunity_name or new_name, amount=body.amount,
                expected_close=body.expected_close, stage_id=body.stage_id,
            )  # fmt: skip
            if new_name:
                result.account.name = new_name
        answer = Converted(
            account_id=result.account.id,
            contact_id=result.contact.id,
            opportunity_id=result.opportunity.id if result.opportunity else None,
        )
    return web.json_response(answer.model_dump(mode="json"), status=201)


async def move_stage(request: web.Request) -> web.Response:
    """``store.pipeline.advance_stage``: a stage's missing fields come back as 422, by name."""
    viewer = await allowed(request, "opportunities", "edit")
    body = await body_of(request, StageMove)
    deals = MODULES["opportunities"]
    given: Any = body.values
    values = given.model_dump(include=given.model_fields_set)
    async with store_of(request).session() as session, session.begin():
        deal = await load_visible(session, deals, viewer.access, request.match_info["id"])
        errors = {f"values.{k}": v for k, v in (await check_refs(session, deals, viewer,
                                                                  values)).items()}  # fmt: skip
        if errors:
            raise problems(errors)
        moved = await advance_stage(session, deal.id, body.stage_id, user_id=viewer.user_id,
                                    values=values, probability=body.probability)  # fmt: skip
        answer = shown(deals, moved)
    return web.json_response(answer)


async def dial(request: web.Request) -> web.Response:
    """Click-to-dial: the same ``DialRequested`` event as the phone panel's dial button."""
    viewer = await caller(request)
    if not viewer.access.can_dial:
        raise refuse(403, "your role may not dial")
    body = await body_of(request, Dial)
    origin = None
    if body.record is not None:
        async with store_of(request).session() as session:
            found = await visible_ref(session, viewer, body.record)
        if found is None:
            raise problems({"record": "no such record in your scope"})
        origin = f"{found[0]}:{found[1]}"
    requested = await request_dial(store_of(request), viewer.user_id, body.number, origin, None)
    answer = Dialling(request=requested, state="dialling")
    return web.json_response(answer.model_dump(mode="json"), status=202)


ACTION_OPERATIONS = [
    Operation("POST", "/api/v1/activities", create_activity, "create_activity",
              "Log a note, task, meeting, call or visit on records", "Activities",
              {201: (Activity, "logged"), **refusals(401, 403, 413, 422)}, body=ActivityCreate),
    Operation("POST", "/api/v1/leads/{id}/convert", convert, "convert_lead",
              "Convert a lead into a contact (and account, and perhaps a deal)", "Leads",
              {201: (Converted, "converted"), **refusals(401, 403, 404, 413, 422)},
              body=LeadConvert,
              description="A lead converted already is a 422 naming `lead`."),
    Operation("POST", "/api/v1/opportunities/{id}/stage", move_stage, "move_opportunity",
              "Move a deal to another stage", "Opportunities",
              {200: (RECORDS["opportunities"].out, "the deal as moved"),
               **refusals(401, 403, 404, 413, 422)}, body=StageMove,
              description="The fields the stage requires and the deal lacks come back as a "
                          "422 naming each (`values` may give them with the move)."),
    Operation("POST", "/api/v1/calls", dial, "dial", "Click-to-dial: your phone rings first",
              "Calls", {202: (Dialling, "asked of the phone system"),
                        **refusals(401, 403, 413, 422)}, body=Dial),
]  # fmt: skip
