"""ImapScanner against a real Dovecot: first and incremental sync, IDLE, UIDVALIDITY, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import func, select

from scanner.imap import ImapScanner, MailboxSettings, first_sync_since
from scanner.pipeline import MailPipeline, PipelineSettings
from scanner.processor import MailProcessor
from store.db import Store
from store.errors import AuthError
from store.models import Email, EmailLocation, ImapCursor, InboundJournal, Lead
from tests.peers.dovecot import DovecotServer
from tests.peers.local import WatchedStatus

WAIT_S = 15.0


def message(
    n: int, sender: str | None = None, date: str = "Mon, 2 Nov 2026 10:00:00 +0800"
) -> bytes:
    sender = sender or f"customer{n}@company{n}.cn"
    return (
        f"From: Customer {n} <{sender}>\r\nTo: sales@rapport.test\r\nSubject: enquiry {n}\r\n"
        f"Message-ID: <enquiry-{n}@company.cn>\r\nDate: {date}\r\n\r\nplease quote {n}\r\n"
    ).encode()


def settings(server: DovecotServer, **overrides: object) -> MailboxSettings:
    values: dict[str, object] = {
        "name": "sales",
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "security": "plain",
        "folders": ("INBOX",),
        "first_sync": "all",
    }
    values.update(overrides)
    return MailboxSettings(**values)  # type: ignore[arg-type]


async def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await check():  # type: ignore[misc]
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def count(store: Store, model: type, *where: object) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@contextlib.asynccontextmanager
async def scanning(
    store: Store, mailbox: MailboxSettings
) -> AsyncIterator[tuple[WatchedStatus, asyncio.Task[None]]]:
    pipeline = MailPipeline(store, PipelineSettings(lead_mailboxes=frozenset({mailbox.name})))
    status = WatchedStatus()
    processor = asyncio.create_task(MailProcessor(pipeline).run(WatchedStatus()), name="processor")
    scanner = asyncio.create_task(ImapScanner(store, mailbox).run(status), name="scanner")
    try:
        yield status, scanner
    finally:
        for task in (scanner, processor):
            task.cancel()
        await asyncio.gather(scanner, processor, return_exceptions=True)


def test_first_sync_policy() -> None:
    today = dt.date(2026, 11, 23)
    assert first_sync_since("all", today) is None
    assert first_sync_since("days:30", today) == dt.date(2026, 10, 24)
    assert first_sync_since("2026-01-01", today) == dt.date(2026, 1, 1)


async def test_first_sync_idle_and_flags_untouched(store: Store, dovecot: DovecotServer) -> None:
    for n in range(3):
        dovecot.deliver(message(n))
    async with scanning(store, settings(dovecot)) as (status, _task):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _leads_at_least(store, 3), "three leads from the first sync")
        # New mail arrives while the scanner idles: IDLE wakes it.
        began = time.monotonic()
        await asyncio.to_thread(dovecot.append, message(10))
        await wait_for(lambda: _leads_at_least(store, 4), "the appended message")
        assert time.monotonic() - began < 5
    assert await count(store, InboundJournal) == 4
    # Read-only, BODY.PEEK: nothing was marked \Seen.
    with IMAPClient(dovecot.host, dovecot.port, ssl=False) as client:
        client.login(dovecot.username, dovecot.password)
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search("ALL"))
    assert all(b"\\Seen" not in f for f in flags.values())


async def _leads_at_least(store: Store, n: int) -> bool:
    return await count(store, Lead) >= n


async def test_restart_resumes_from_the_cursor_without_duplicates(
    store: Store, dovecot: DovecotServer
) -> None:
    dovecot.deliver(message(1))
    async with scanning(store, settings(dovecot)) as (status, _):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _leads_at_least(store, 1), "first message")
    dovecot.deliver(message(2))
    async with scanning(store, settings(dovecot)) as (status, _):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _leads_at_least(store, 2), "second message")
    assert await count(store, InboundJournal) == 2 and await count(store, Email) == 2
    async with store.session() as session:
        cursor = await session.scalar(select(ImapCursor))
        assert cursor is not None and cursor.last_uid == 2


async def test_uidvalidity_change_resyncs_without_duplicates(
    store: Store, dovecot: DovecotServer
) -> None:
    for n in range(2):
        dovecot.deliver(message(n))
    async with scanning(store, settings(dovecot)) as (status, _):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _leads_at_least(store, 2), "first sync")
    async with store.session() as session:
        before = await session.scalar(select(ImapCursor.uidvalidity))
    await asyncio.to_thread(dovecot.stop)
    dovecot.reset_uidvalidity()
    await asyncio.to_thread(dovecot.start)
    async with scanning(store, settings(dovecot)) as (status, _):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _processed(store, 4), "the re-read messages")
    async with store.session() as session:
        after = await session.scalar(select(ImapCursor.uidvalidity))
    assert after != before
    # Re-read under the new UIDVALIDITY: same two emails, each now with two locations.
    assert await count(store, Email) == 2 and await count(store, Lead) == 2
    assert await count(store, EmailLocation) == 4


async def _processed(store: Store, n: int) -> bool:
    return await count(store, InboundJournal, InboundJournal.email_id.is_not(None)) >= n


async def test_server_going_away_is_transient_and_two_folders_share_one_email(
    store: Store, dovecot: DovecotServer
) -> None:
    raw = message(5)
    dovecot.deliver(raw)
    await asyncio.to_thread(dovecot.append, raw, "Archive")
    mailbox = settings(dovecot, folders=("INBOX", "Archive"))
    async with scanning(store, mailbox) as (status, scanner):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _processed(store, 2), "both copies")
        await asyncio.to_thread(dovecot.stop)
        with pytest.raises(Exception) as err:
            await asyncio.wait_for(scanner, WAIT_S)
        assert type(err.value).__name__ == "TransientError"
    assert await count(store, Email) == 1 and await count(store, EmailLocation) == 2
    await asyncio.to_thread(dovecot.start)  # the supervisor's restart finds it back
    dovecot.deliver(message(6))
    async with scanning(store, mailbox) as (status, _):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _leads_at_least(store, 2), "mail after the restart")


async def test_wrong_password_is_an_auth_error(store: Store, dovecot: DovecotServer) -> None:
    with pytest.raises(AuthError):
        await ImapScanner(store, settings(dovecot, password="wrong")).run(WatchedStatus())


async def test_rules_flag_and_move_on_the_server(store: Store, dovecot: DovecotServer) -> None:
    from store.models import ImapAction, MailRule

    async with store.session() as session, session.begin():
        session.add_all([
            MailRule(name="urgent", position=1, continue_after=True,
                     conditions=[{"field": "subject", "op": "contains", "value": "urgent"}],
                     actions=[{"type": "flag"}]),
            MailRule(name="file partners", position=2,
                     conditions=[{"field": "from", "op": "domain", "value": "partner.cn"}],
                     actions=[{"type": "move", "folder": "Partners"}]),
        ])  # fmt: skip
    dovecot.deliver_many([
        b"From: a@customer.cn\r\nSubject: urgent order\r\nMessage-ID: <u1@c>\r\n\r\nx\r\n",
        b"From: b@partner.cn\r\nSubject: urgent too\r\nMessage-ID: <p1@c>\r\n\r\nx\r\n",
        b"From: c@customer.cn\r\nSubject: plain\r\nMessage-ID: <n1@c>\r\n\r\nx\r\n",
    ])  # fmt: skip
    async with scanning(store, settings(dovecot, poll_s=0.5)) as (status, _):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _processed(store, 3), "all three filed")

        async def actions_done() -> bool:
            return (
                await count(store, ImapAction) == 3
                and await count(store, ImapAction, ImapAction.done_at.is_(None)) == 0
            )

        await wait_for(actions_done, "the rules' server actions")

    def server_view() -> tuple[dict[bytes, bool], list[bytes]]:
        with IMAPClient(dovecot.host, dovecot.port, ssl=False) as client:
            client.login(dovecot.username, dovecot.password)
            client.select_folder("INBOX", readonly=True)
            inbox = client.fetch(
                client.search("ALL"), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
            )
            flagged = {
                bytes(d[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]).strip(): b"\\Flagged" in d[b"FLAGS"]
                for d in inbox.values()
            }
            client.select_folder("Partners", readonly=True)
            moved = [
                bytes(d[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]).strip()
                for d in client.fetch(
                    client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
                ).values()
            ]
            return flagged, moved

    flagged, moved = await asyncio.to_thread(server_view)
    assert flagged == {b"Message-ID: <u1@c>": True, b"Message-ID: <n1@c>": False}
    assert moved == [b"Message-ID: <p1@c>"]


async def test_oversize_mail_is_recorded_by_its_headers_and_first_sync_since(
    store: Store, dovecot: DovecotServer
) -> None:
    big = message(1) + b"x" * 3000 + b"\r\n"
    old = message(2, date="Mon, 2 Nov 2020 10:00:00 +0800")
    dovecot.deliver_many([big, old])
    # Dovecot dates Maildir mail by the file's time: make the old one old.
    for path in sorted((dovecot.maildir / "new").iterdir())[1:]:
        os.utime(path, (1_600_000_000, 1_600_000_000))
    async with scanning(store, settings(dovecot, max_message_size=2000, first_sync="days:30")) as (
        status,
        _,
    ):
        await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
        await wait_for(lambda: _processed(store, 1), "the big message")
    async with store.session() as session:
        rows = (await session.scalars(select(InboundJournal))).all()
        assert (
            len(rows) == 1 and rows[0].size_exceeded
        )  # the old one was before the first sync window
        email = await session.get(Email, rows[0].email_id)
        assert email is not None and email.subject == "enquiry 1"
        assert "message over the size limit: headers only" in email.defects


async def test_xoauth2_with_a_token_refreshed_when_refused(store: Store, tmp_path: Path) -> None:
    import shutil
    import stat
    import tempfile

    from aiohttp import web

    from tests.conftest import missing_peer
    from tests.peers.dovecot import available, run_dovecot

    if problem := available():
        missing_peer(problem)
    live = {"token": "fresh-token"}

    async def introspect(request: web.Request) -> web.Response:
        token = (await request.post()).get("token")
        return web.json_response(
            {"active": True, "username": "sales@rapport.test"}
            if token == live["token"]
            else {"active": False}
        )

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # A token helper that hands out an expired token first, then a fresh one.
    calls = tmp_path / "calls"
    helper = tmp_path / "token.sh"
    helper.write_text(
        f"#!/bin/sh\necho x >> {calls}\n"
        f"if [ $(wc -l < {calls}) -le 1 ]; then echo expired-token; else echo fresh-token; fi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    root = Path(tempfile.mkdtemp(prefix="rapport-dovecot-"))
    try:
        with run_dovecot(
            root, oauth2_introspection_url=f"http://127.0.0.1:{port}/introspect"
        ) as server:
            server.deliver(message(1))
            mailbox = settings(server, password="", auth="xoauth2", token_command=str(helper))
            async with scanning(store, mailbox) as (status, _):
                await asyncio.wait_for(status.is_ready.wait(), WAIT_S)
                await wait_for(lambda: _leads_at_least(store, 1), "mail read over XOAUTH2")
            assert calls.read_text().count("x") == 2  # refused once, refreshed once
            live["token"] = "nobody-has-this"
            with pytest.raises(AuthError):
                await ImapScanner(store, mailbox).run(WatchedStatus())
    finally:
        await runner.cleanup()
        shutil.rmtree(root, ignore_errors=True)
