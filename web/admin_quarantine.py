"""Admin: the inbound quarantine — mail that could not be filed, why, and a button to retry.

Rows are ``inbound_journal`` entries in state ``quarantined`` (the same list
as ``rapport mail quarantine list``).  Replaying goes through the daemon's
``QuarantineReplay`` (the mail-in pipeline's own replay), since this package
does not import the scanner.  Sender and subject are read from the stored
message's first bytes for the admin to recognise it; the mail itself is never
rendered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
from pathlib import Path

from aiohttp import web
from sqlalchemy import func, select

from store.models import InboundJournal, JournalState
from web.admin_base import admin_viewer, editor, id_of, services_of, store_of
from web.render import render

MOST_LISTED = 200
PEEK_BYTES = 64 * 1024


def peek_headers_blocking(path: Path) -> tuple[str, str]:
    """From and Subject of a stored message, decoded; blanks where they cannot be read."""
    try:
        with path.open("rb") as raw:
            head = raw.read(PEEK_BYTES)
    except OSError:
        return "", ""
    head = head.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    found: list[str] = []
    for name in ("from", "subject"):
        value = ""
        with contextlib.suppress(Exception):  # quarantined mail is often malformed
            parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
            value = str(parsed.get(name, "") or "")
        found.append(" ".join(value.split())[:200])
    return found[0], found[1]


async def quarantine_list(request: web.Request) -> web.Response:
    admin_viewer(request)
    store = store_of(request)
    async with store.session() as session:
        quarantined = InboundJournal.state == JournalState.QUARANTINED
        total = int(await session.scalar(select(func.count()).where(quarantined)) or 0)
        rows = (
            await session.scalars(
                select(InboundJournal)
                .where(quarantined)
                .order_by(InboundJournal.id.desc())
                .limit(MOST_LISTED)
            )
        ).all()
    headers = await asyncio.to_thread(
        lambda: [peek_headers_blocking(store.blobs.path_for(row.blob_sha256)) for row in rows]
    )
    return render(
        request,
        "admin/quarantine.html",
        {
            "rows": list(zip(rows, headers, strict=True)),
            "total": total,
            "can_replay": services_of(request).quarantine is not None,
            "replayed": request.query.get("replayed", ""),
            "state": request.query.get("state", ""),
        },
    )


async def replay(request: web.Request) -> web.Response:
    viewer = editor(request)
    journal_id = id_of(request)
    replayer = services_of(request).quarantine
    if replayer is None:
        raise web.HTTPServiceUnavailable(
            text=viewer.t.gettext("Replaying needs the daemon's mail pipeline.")
        )
    async with store_of(request).session() as session:
        row = await session.get(InboundJournal, journal_id)
    if row is None or row.state != JournalState.QUARANTINED:
        raise web.HTTPNotFound()
    outcome = await replayer.replay(journal_id)
    raise web.HTTPSeeOther(f"/admin/quarantine?replayed={journal_id}&state={outcome.state}")


def add_quarantine_routes(app: web.Application) -> None:
    app.router.add_get("/admin/quarantine", quarantine_list)
    app.router.add_post(r"/admin/quarantine/{id}/replay", replay)
