"""A record's one communication timeline, and the email bodies and attachments it shows.

Emails, calls, notes, tasks, meetings, visits and stage changes, newest first,
filterable by kind, paged by keyset.  An email's HTML is never put into the
page: it is sanitised with nh3 and served on its own URL with
``Content-Security-Policy: sandbox``, shown in a sandboxed frame.  Bodies and
attachments are served only to a viewer who may see a record the email is
filed on.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

import nh3
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import timeline
from store.db import Store
from store.models import (
    RECORD_TYPES,
    Activity,
    ActivityKind,
    ActivityLink,
    ActivityStatus,
    Attachment,
    Call,
    CallSegment,
    Email,
    PipelineStage,
    SentRecipient,
    StageHistory,
    User,
)
from web.auth import VIEWER
from web.modules import db_int
from web.phone import CONFIG_KEY, recording_link

TIMELINE_STORE_KEY = web.AppKey("timeline_store", Store)
PAGE = 30
# What a mail's HTML may keep: text formatting, tables, links and images, nothing that runs.
SANDBOX_CSP = "sandbox; default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"


# Not an activity: an opportunity's moves through the pipeline, read from its stage history.
STAGE = "stage"


def timeline_kinds(record_type: str) -> list[str]:
    """The kinds a record's timeline can be narrowed to."""
    kinds = [k.value for k in ActivityKind]
    return [*kinds, STAGE] if record_type == "opportunity" else kinds


async def timeline_entries(
    request: web.Request, session: AsyncSession, record_type: str, record_id: int,
    kinds: list[str] | None, before: tuple[Any, int] | None,
) -> tuple[list[dict[str, Any]], tuple[dt.datetime, int] | None]:  # fmt: skip
    """One page of the timeline as the template shows it, and the cursor of the next page.

    ``kinds`` None is everything; an opportunity's stage changes join the page
    they fall within in time (the cursor stays the activities' own).
    """
    wanted = None if kinds is None else [k for k in kinds if k != STAGE]
    activities = await timeline(
        session, record_type, record_id, kinds=wanted, before=before, limit=PAGE + 1
    )
    more = len(activities) > PAGE
    activities = activities[:PAGE]
    older = None
    if more and activities:
        last = activities[-1]
        link_at = await session.scalar(
            select(ActivityLink.occurred_at).where(
                ActivityLink.activity_id == last.id,
                ActivityLink.record_type == record_type,
                ActivityLink.record_id == record_id,
            )
        )
        older = (link_at or last.occurred_at, last.id)
    stages: list[dict[str, Any]] = []
    if record_type == "opportunity" and (kinds is None or STAGE in kinds):
        # This page covers [the oldest activity shown, the cursor): later pages the rest.
        stages = await _stage_changes(
            session, record_id, older[0] if older else None, before[0] if before else None
        )
    emails = await _emails(session, {a.email_id for a in activities if a.email_id})
    calls = await _calls(request, session, {a.call_id for a in activities if a.call_id})
    people = {a.owner_id for a in activities if a.owner_id}
    people |= {c["agent_id"] for c in calls.values() if c["agent_id"]}
    people |= {s["by_id"] for s in stages if s["by_id"]}
    names = await _names(session, people)
    now = dt.datetime.now(dt.UTC)
    entries: list[dict[str, Any]] = []
    for activity in activities:
        call = calls.get(activity.call_id or 0)
        if call is not None:
            call["agent"] = names.get(call["agent_id"] or 0, "")
        overdue = (activity.kind == ActivityKind.TASK and activity.status == ActivityStatus.PLANNED
                   and activity.due_at is not None and activity.due_at < now)  # fmt: skip
        entries.append({
            "activity": activity, "kind": activity.kind.value, "at": activity.occurred_at,
            "owner": names.get(activity.owner_id or 0, ""), "overdue": overdue,
            "email": emails.get(activity.email_id or 0), "call": call, "stage": None,
        })  # fmt: skip
    for change in stages:
        entries.append({"activity": None, "kind": STAGE, "at": change["at"], "stage": change,
                        "owner": names.get(change["by_id"] or 0, ""), "email": None,
                        "call": None, "overdue": False})  # fmt: skip
    entries.sort(key=lambda e: e["at"], reverse=True)  # stable: activities keep their order
    return entries, older


async def _stage_changes(
    session: AsyncSession, opportunity_id: int, lower: dt.datetime | None,
    upper: dt.datetime | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The deal's entries into stages at or after ``lower`` and before ``upper``, each with
    the stage it left (a deal has a handful, so all are read to know each one's previous)."""
    rows = await session.execute(
        select(StageHistory, PipelineStage.name)
        .join(PipelineStage, PipelineStage.id == StageHistory.stage_id)
        .where(StageHistory.opportunity_id == opportunity_id)
        .order_by(StageHistory.entered_at, StageHistory.id)
    )
    changes = []
    previous = None
    for row, name in rows:
        if (lower is None or row.entered_at >= lower) and (upper is None or row.entered_at < upper):
            changes.append({"at": row.entered_at, "to": name, "from": previous,
                            "by_id": row.entered_by_id, "amount": row.amount,
                            "probability": row.probability})  # fmt: skip
        previous = name
    return changes


async def _names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(
        select(User.id, User.display_name, User.username).where(User.id.in_(sorted(ids)))
    )
    return {uid: display or name for uid, display, name in rows}


async def _emails(session: AsyncSession, ids: set[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    found: dict[int, dict[str, Any]] = {}
    for email in await session.scalars(select(Email).where(Email.id.in_(sorted(ids)))):
        found[email.id] = {"row": email, "attachments": [], "recipients": [],
                           "to": ", ".join(_address(a) for a in email.to or []),
                           "cc": ", ".join(_address(a) for a in email.cc or [])}  # fmt: skip
    # Numbered among all of the email's attachments, as /emails/<id>/attachments/<n> counts.
    attachments = await session.scalars(
        select(Attachment).where(Attachment.email_id.in_(sorted(ids))).order_by(Attachment.id)
    )
    counted: dict[int, int] = {}
    for attachment in attachments:
        position = counted.get(attachment.email_id, 0)
        counted[attachment.email_id] = position + 1
        if not attachment.is_inline:
            found[attachment.email_id]["attachments"].append((position, attachment))
    recipients = await session.scalars(
        select(SentRecipient)
        .where(SentRecipient.email_id.in_(sorted(ids)))
        .order_by(SentRecipient.id)
    )
    for recipient in recipients:
        found[recipient.email_id]["recipients"].append(recipient)
    return found


def _address(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("address") or entry.get("email") or "")
    if isinstance(entry, list | tuple) and entry:
        return str(entry[-1])
    return str(entry)


async def _calls(
    request: web.Request, session: AsyncSession, ids: set[int]
) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    config = request.app.get(CONFIG_KEY)
    found: dict[int, dict[str, Any]] = {}
    for call in await session.scalars(select(Call).where(Call.id.in_(sorted(ids)))):
        found[call.id] = {
            "row": call, "segments": [], "agent_id": call.agent_id,
            "recording": recording_link(config, call.id) if call.recording and config else None,
        }  # fmt: skip
    segments = await session.scalars(
        select(CallSegment).where(CallSegment.call_id.in_(sorted(ids))).order_by(CallSegment.id)
    )
    for segment in segments:
        found[segment.call_id]["segments"].append(segment)
    return found


# The email's own URLs ----------------------------------------------------------------------


async def _visible_email(request: web.Request) -> Email:
    """The email, if the viewer may see a record it is filed on; else 404."""
    viewer = request[VIEWER]
    email_id = db_int(request.match_info["id"])
    store = request.app[TIMELINE_STORE_KEY]
    async with store.session() as session:
        email = await session.get(Email, email_id) if email_id is not None else None
        if email is None:
            raise web.HTTPNotFound()
        links = await session.execute(
            select(ActivityLink.record_type, ActivityLink.record_id)
            .join(Activity, Activity.id == ActivityLink.activity_id)
            .where(Activity.email_id == email.id, Activity.deleted_at.is_(None))
        )
        for record_type, record_id in links:
            model = RECORD_TYPES.get(record_type)
            if model is None:
                continue
            record: Any = await session.get(model, record_id)
            if record is not None and getattr(record, "deleted_at", None) is None:
                if not hasattr(record, "owner_id") or viewer.access.may_see(record):
                    return email
    raise web.HTTPNotFound()


def sanitise(html: str) -> str:
    """Mail HTML with nothing that runs or reaches out: no scripts, handlers, forms or frames."""
    return nh3.clean(
        html,
        tags=nh3.ALLOWED_TAGS | {"font", "center"},
        url_schemes={"http", "https", "mailto", "cid", "data"},
        link_rel="noopener noreferrer nofollow",
    )


async def email_body(request: web.Request) -> web.Response:
    email = await _visible_email(request)
    if email.html_body:
        body = sanitise(email.html_body)
    else:
        escaped = (email.text_body or "").replace("&", "&amp;").replace("<", "&lt;")
        body = f'<pre style="white-space:pre-wrap;font-family:inherit">{escaped}</pre>'
    page = f'<!doctype html><meta charset="utf-8"><base target="_blank">{body}'
    return web.Response(
        text=page, content_type="text/html", charset="utf-8",
        headers={"Content-Security-Policy": SANDBOX_CSP, "X-Frame-Options": "SAMEORIGIN",
                 "Cache-Control": "private, no-store"},
    )  # fmt: skip


async def email_attachment(request: web.Request) -> web.Response:
    email = await _visible_email(request)
    store = request.app[TIMELINE_STORE_KEY]
    position = int(request.match_info["n"])
    async with store.session() as session:
        attachments = (
            await session.scalars(
                select(Attachment).where(Attachment.email_id == email.id).order_by(Attachment.id)
            )
        ).all()
    if not 0 <= position < len(attachments):
        raise web.HTTPNotFound()
    attachment = attachments[position]
    data = await store.blobs.read(attachment.blob_sha256)
    name = attachment.filename or f"attachment-{position}"
    quoted = urllib.parse.quote(name)
    return web.Response(
        body=data, content_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quoted}",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"},
    )  # fmt: skip


def add_timeline_routes(app: web.Application, store: Store) -> None:
    app[TIMELINE_STORE_KEY] = store
    app.router.add_get("/emails/{id:\\d+}/body", email_body)
    app.router.add_get("/emails/{id:\\d+}/attachments/{n:\\d+}", email_attachment)
