"""ImapScanner: read sales mailboxes by UID, push with IDLE, never touch the user's flags.

imapclient is blocking; every call runs in a worker thread.  Each folder has a
cursor (UIDVALIDITY, last UID) moved in the same transaction that journals the
batch, so a crash re-reads at most one batch and the journal's source keys make
that harmless.  When UIDVALIDITY changes the folder is read again from the
start; the pipeline recognises mail it already has (content hash, Message-ID)
and only adds the new location.  Messages are fetched with ``BODY.PEEK[]`` from
a read-only selection: \\Seen is never set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.pipeline import IMAP_ACTIONS_QUEUED
from store.base import utcnow
from store.bus import Subscription
from store.db import Store
from store.errors import AuthError, TransientError
from store.journal import JournalEntry, journal_many
from store.models import ImapAction, ImapCursor
from store.service import ServiceStatus

log = logging.getLogger(__name__)

IDLE_RENEW_S = 25 * 60  # RFC 2177: servers may drop an IDLE after 29 minutes
IDLE_CHECK_S = 1.0
POLL_S = 60.0
FETCH_BATCH = 200
CONNECT_TIMEOUT_S = 30.0
TOKEN_COMMAND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MailboxSettings:
    name: str
    host: str
    port: int
    username: str
    password: str
    security: str = "tls"
    folders: Sequence[str] = field(default_factory=lambda: ("INBOX",))
    first_sync: str = "all"
    max_message_size: int = 25_000_000
    # "password", or "xoauth2" with a token from a command (run at every login, so it
    # can refresh an expired token) or a file (kept fresh by something else).
    auth: str = "password"
    token_command: str | None = None
    token_file: str | None = None
    poll_s: float = POLL_S
    idle_renew_s: float = IDLE_RENEW_S
    batch: int = FETCH_BATCH


def first_sync_since(policy: str, today: dt.date | None = None) -> dt.date | None:
    """The SINCE date of a first sync policy ("all", "days:N" or an ISO date)."""
    today = today or dt.date.today()
    if policy == "all":
        return None
    if policy.startswith("days:"):
        return today - dt.timedelta(days=int(policy[5:]))
    return dt.date.fromisoformat(policy)


class ImapSession:
    """One blocking IMAP connection; every method runs in a thread."""

    def __init__(self, settings: MailboxSettings) -> None:
        self.settings = settings
        self.client: imapclient.IMAPClient | None = None

    def connect_blocking(self) -> None:
        s = self.settings
        context = ssl.create_default_context()
        try:
            self.client = imapclient.IMAPClient(
                s.host,
                port=s.port,
                ssl=s.security == "tls",
                ssl_context=context,
                timeout=CONNECT_TIMEOUT_S,
            )
            # imapclient turns imaplib's debug on, which repr()s every body: 4.5x the CPU.
            self.client._imap.debug = 0
            if s.security == "starttls":
                self.client.starttls(context)
            self._login_blocking()
        except LoginError as err:
            self.close_blocking()
            raise AuthError(f"mailbox {s.name}: login refused for {s.username}") from err
        except (TimeoutError, OSError, IMAPClientError) as err:
            self.close_blocking()
            raise TransientError(
                f"mailbox {s.name}: cannot reach {s.host}:{s.port}: {err}"
            ) from err

    def token_blocking(self) -> str:
        """An XOAUTH2 access token, fresh from the command or as the file has it now."""
        s = self.settings
        if s.token_command:
            try:
                done = subprocess.run(  # noqa: S603 - the admin's own configured command
                    shlex.split(s.token_command),
                    capture_output=True,
                    text=True,
                    timeout=TOKEN_COMMAND_TIMEOUT_S,
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                raise AuthError(f"mailbox {s.name}: token command failed: {err}") from err
            if done.returncode != 0 or not done.stdout.strip():
                raise AuthError(
                    f"mailbox {s.name}: token command exited {done.returncode} without a token"
                )
            return done.stdout.strip()
        if s.token_file:
            try:
                return Path(s.token_file).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise AuthError(
                    f"mailbox {s.name}: cannot read token file: {err.strerror}"
                ) from err
        raise AuthError(f"mailbox {s.name}: xoauth2 needs a token command or file")

    def _login_blocking(self) -> None:
        s = self.settings
        assert self.client is not None
        if s.auth != "xoauth2":
            self.client.login(s.username, s.password)
            return
        try:
            self.client.oauth2_login(s.username, self.token_blocking())
        except LoginError:
            # The token may have expired since it was issued: ask for a fresh one, once.
            log.info("mailbox %s: XOAUTH2 token refused, fetching a fresh one", s.name)
            self.client.oauth2_login(s.username, self.token_blocking())

    @property
    def has_idle(self) -> bool:
        assert self.client is not None
        return bool(self.client.has_capability("IDLE"))

    def select_blocking(self, folder: str) -> int:
        assert self.client is not None
        info = self.client.select_folder(folder, readonly=True)
        return int(info[b"UIDVALIDITY"])

    def new_uids_blocking(self, last_uid: int, since: dt.date | None) -> list[int]:
        assert self.client is not None
        criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
        if last_uid == 0 and since is not None:
            criteria = ["SINCE", since]
        # "n:*" always matches the highest UID, even when it is below n.
        return sorted(uid for uid in self.client.search(criteria) if uid > last_uid)

    def fetch_blocking(self, uids: list[int]) -> list[tuple[int, bytes, bool]]:
        """(uid, bytes, over the size limit) per uid; a message too big gives its headers only."""
        assert self.client is not None
        sizes = {
            uid: int(data.get(b"RFC822.SIZE", 0))
            for uid, data in self.client.fetch(uids, ["RFC822.SIZE"]).items()
        }
        small = [uid for uid in uids if sizes.get(uid, 0) <= self.settings.max_message_size]
        large = [uid for uid in uids if uid not in small and uid in sizes]
        out: list[tuple[int, bytes, bool]] = []
        if small:
            for uid, data in self.client.fetch(small, ["BODY.PEEK[]"]).items():
                out.append((uid, bytes(data.get(b"BODY[]") or b""), False))
        if large:
            for uid, data in self.client.fetch(large, ["BODY.PEEK[HEADER]"]).items():
                out.append((uid, bytes(data.get(b"BODY[HEADER]") or b""), True))
        return sorted(out)

    def idle_wait_blocking(self, limit_s: float, stop: threading.Event) -> bool:
        """IDLE until new mail (True), ``limit_s`` passes or ``stop`` is set (False).

        The whole IDLE exchange stays in one thread: ending it from another
        thread while this one reads the socket would interleave the two.
        """
        assert self.client is not None
        self.client.idle()
        try:
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline and not stop.is_set():
                responses = self.client.idle_check(timeout=IDLE_CHECK_S)
                if any(r and r[0] == b"BYE" for r in responses):
                    raise ConnectionResetError("the server ended the session (BYE)")
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    return True
            return False
        finally:
            with contextlib.suppress(OSError, IMAPClientError):
                if self.client is not None:
                    self.client.idle_done()

    def apply_blocking(
        self, folder: str, uidvalidity: int, flag: list[int], moves: dict[str, list[int]]
    ) -> None:
        """Flag and move messages in a folder opened for writing, if its UIDVALIDITY still holds."""
        assert self.client is not None
        info = self.client.select_folder(folder, readonly=False)
        if int(info[b"UIDVALIDITY"]) != uidvalidity:
            raise LookupError(
                f"UIDVALIDITY of {folder} changed; the UIDs no longer name those messages"
            )
        if flag:
            self.client.add_flags(flag, [imapclient.FLAGGED])
        for target, uids in moves.items():
            if not self.client.folder_exists(target):
                self.client.create_folder(target)
            if self.client.has_capability("MOVE"):
                self.client.move(uids, target)
            else:  # RFC 3501: copy, mark deleted, expunge just those
                self.client.copy(uids, target)
                self.client.add_flags(uids, [imapclient.DELETED])
                self.client.uid_expunge(uids)

    def noop_blocking(self) -> None:
        assert self.client is not None
        self.client.noop()

    def close_blocking(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()


class ImapScanner:
    """Scans one mailbox's folders into the journal, then waits for news with IDLE or polling."""

    def __init__(self, store: Store, settings: MailboxSettings) -> None:
        self.store = store
        self.settings = settings
        self.name = f"imap:{settings.name}"

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except (TimeoutError, OSError, IMAPClientError) as err:
            raise TransientError(
                f"mailbox {self.settings.name}: {type(err).__name__}: {err}"
            ) from err

    async def run(self, status: ServiceStatus) -> None:
        imap = ImapSession(self.settings)
        await asyncio.to_thread(imap.connect_blocking)
        try:
            async with self.store.bus.subscribe(IMAP_ACTIONS_QUEUED) as actions:
                status.progress("connected, syncing")
                await self.sync_all(imap, status)
                status.ready(f"{len(self.settings.folders)} folder(s) synced")
                while True:
                    await self.wait_for_news(imap, actions)
                    await self.sync_all(imap, status)
        finally:
            await asyncio.shield(asyncio.to_thread(imap.close_blocking))

    async def sync_all(self, imap: ImapSession, status: ServiceStatus) -> int:
        total = 0
        for folder in self.settings.folders:
            total += await self.sync_folder(imap, folder, status)
        await self.apply_actions(imap)
        return total

    async def apply_actions(self, imap: ImapSession) -> int:
        """Carry out the flag and move actions filing rules left for this mailbox."""
        async with self.store.session() as session:
            pending = (
                await session.scalars(
                    select(ImapAction).where(
                        ImapAction.mailbox == self.settings.name, ImapAction.done_at.is_(None)
                    )
                )
            ).all()
        groups: dict[tuple[str, int], list[ImapAction]] = {}
        for action in pending:
            groups.setdefault((action.folder, action.uidvalidity), []).append(action)
        for (folder, uidvalidity), actions in groups.items():
            flag = [a.uid for a in actions if a.action == "flag"]
            moves: dict[str, list[int]] = {}
            for a in actions:
                if a.action == "move" and a.target:
                    moves.setdefault(a.target, []).append(a.uid)
            error = None
            try:
                await self._call(imap.apply_blocking, folder, uidvalidity, flag, moves)
            except LookupError as err:
                error = str(err)
            async with self.store.session() as session, session.begin():
                await session.execute(
                    update(ImapAction)
                    .where(ImapAction.id.in_([a.id for a in actions]))
                    .values(done_at=utcnow(), error=error)
                )
        return len(pending)

    async def _cursor(self, folder: str) -> tuple[int, int]:
        async with self.store.session() as session:
            row = await session.scalar(
                select(ImapCursor).where(
                    ImapCursor.mailbox == self.settings.name, ImapCursor.folder == folder
                )
            )
            return (row.uidvalidity, row.last_uid) if row else (0, 0)

    async def sync_folder(self, imap: ImapSession, folder: str, status: ServiceStatus) -> int:
        """Journal every message above the folder's cursor; returns how many were new."""
        uidvalidity = await self._call(imap.select_blocking, folder)
        known_validity, last_uid = await self._cursor(folder)
        if known_validity and known_validity != uidvalidity:
            log.warning(
                "mailbox %s folder %s: UIDVALIDITY changed (%s -> %s), reading it again",
                self.settings.name, folder, known_validity, uidvalidity,
            )  # fmt: skip
            last_uid = 0
        since = first_sync_since(self.settings.first_sync) if known_validity == 0 else None
        uids = await self._call(imap.new_uids_blocking, last_uid, since)
        new = 0
        for start in range(0, len(uids), self.settings.batch):
            batch = uids[start : start + self.settings.batch]
            fetched = await self._call(imap.fetch_blocking, batch)
            new += await self._journal(folder, uidvalidity, fetched, batch[-1])
            if len(uids) > self.settings.batch:
                note = f"{folder}: {start + len(batch)}/{len(uids)}"
                status.progress(note)
                log.info("mailbox %s syncing %s", self.settings.name, note)
        if not uids and known_validity != uidvalidity:
            await self._journal(folder, uidvalidity, [], last_uid)
        return new

    async def _journal(
        self, folder: str, uidvalidity: int, fetched: list[tuple[int, bytes, bool]], last_uid: int
    ) -> int:
        name = self.settings.name
        entries = [
            JournalEntry(
                source_key=f"imap:{name}\x1f{folder}\x1f{uidvalidity}\x1f{uid}",
                raw=raw,
                location={
                    "mailbox": name,
                    "folder": folder,
                    "uidvalidity": uidvalidity,
                    "uid": uid,
                },
                size_exceeded=too_big,
            )
            for uid, raw, too_big in fetched
        ]

        async def move_cursor(session: AsyncSession) -> None:
            row = await session.scalar(
                select(ImapCursor).where(ImapCursor.mailbox == name, ImapCursor.folder == folder)
            )
            if row is None:
                session.add(
                    ImapCursor(
                        mailbox=name, folder=folder, uidvalidity=uidvalidity, last_uid=last_uid
                    )
                )
            else:
                row.uidvalidity, row.last_uid = uidvalidity, last_uid

        return len(await journal_many(self.store, entries, also=move_cursor))

    async def _actions_for_me(self, actions: Subscription) -> None:
        while (await actions.get()).data.get("mailbox") != self.settings.name:
            pass

    async def wait_for_news(self, imap: ImapSession, actions: Subscription) -> None:
        """Return on new mail (IDLE), when rules queued server actions, or at poll time."""
        if not imap.has_idle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._actions_for_me(actions), self.settings.poll_s)
            return
        await self._call(imap.select_blocking, self.settings.folders[0])
        # With several folders only the first is watched; the others are polled this often.
        limit = self.settings.idle_renew_s
        if len(self.settings.folders) > 1:
            limit = min(limit, self.settings.poll_s)
        stop = threading.Event()
        waiting = asyncio.ensure_future(self._call(imap.idle_wait_blocking, limit, stop))
        queued = asyncio.ensure_future(self._actions_for_me(actions))
        try:
            await asyncio.wait([waiting, queued], return_when=asyncio.FIRST_COMPLETED)
            stop.set()  # the thread ends its IDLE within IDLE_CHECK_S
            await waiting
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(Exception):
                await waiting
            raise
        finally:
            queued.cancel()
