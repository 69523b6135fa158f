"""The configured peers for the admin pages: what may be shown of them, their state, a login test.

``ConfiguredConnections`` implements ``web.admin_base.ConnectionAdmin``.  It
lists each mailbox, the relay and each PBX with only what an administrator may
see: the settings are picked one by one, never dumped, so a password, AMI
secret or token command cannot slip onto a page.  A test logs in the way the
service itself does (the scanner's IMAP session, the relay's SMTP handshake
and login, the phone service's AMI client) within ``TEST_TIMEOUT_S`` and
reports what happened; it never raises and never changes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import smtplib
import ssl
from collections.abc import Mapping, Sequence

from asterisk.client import AmiClient, AmiSettings
from daemon.config import Config, MailboxConfig, PbxConfig, SmtpRelayConfig
from daemon.supervisor import Supervisor
from scanner.imap import ImapSession, MailboxSettings
from store.errors import RapportError, TransientError
from tracking.outbox import RelaySettings
from web.admin_base import Connection, ConnectionTest, ServiceState

TEST_TIMEOUT_S = 10.0


def mailbox_settings(config: Config, mailbox: MailboxConfig) -> MailboxSettings:
    """One ``[[imap.mailboxes]]`` as the scanner's settings."""
    return MailboxSettings(
        name=mailbox.name, host=mailbox.host, port=mailbox.port, username=mailbox.username,
        password=mailbox.password.reveal() if mailbox.password else "", auth=mailbox.auth,
        token_command=mailbox.oauth2_token_command,
        token_file=str(mailbox.oauth2_token_file) if mailbox.oauth2_token_file else None,
        security=mailbox.security, folders=tuple(mailbox.folders), first_sync=mailbox.first_sync,
        max_message_size=config.smtp_ingress.max_message_size,
    )  # fmt: skip


def relay_settings(relay: SmtpRelayConfig) -> RelaySettings:
    """``[smtp_relay]`` as the outbox's settings (its host must be set)."""
    return RelaySettings(
        host=relay.host or "", port=relay.port, security=relay.security,
        username=relay.username, password=relay.password.reveal() if relay.password else None,
        ca_file=str(relay.ca_file) if relay.ca_file else None,
    )  # fmt: skip


def ami_settings(pbx: PbxConfig) -> AmiSettings:
    """One ``[[asterisk.pbx]]`` as the AMI client's settings."""
    return AmiSettings(
        name=pbx.name, host=pbx.host, port=pbx.port, username=pbx.username,
        secret=pbx.secret.reveal() if pbx.secret else "",
        tls=pbx.security == "tls", ca_file=str(pbx.ca_file) if pbx.ca_file else None,
    )  # fmt: skip


def _shown(config: Config) -> list[Connection]:
    """Each peer with its showable settings; secrets are left out by construction."""
    shown: list[Connection] = []
    for m in config.imap.mailboxes:
        shown.append(Connection("imap", m.name, f"imap:{m.name}", (
            ("host", m.host), ("port", str(m.port)), ("security", m.security),
            ("username", m.username), ("auth", m.auth), ("folders", ", ".join(m.folders)),
            ("lead_mailbox", m.lead_mailbox), ("first_sync", m.first_sync),
        )))  # fmt: skip
    relay = config.smtp_relay
    if relay.host:
        shown.append(Connection("relay", "relay", "outbox", (
            ("host", relay.host), ("port", str(relay.port)), ("security", relay.security),
            ("username", relay.username or ""), ("from_address", relay.from_address or ""),
            ("from_name", relay.from_name),
        )))  # fmt: skip
    for p in config.asterisk.pbx:
        shown.append(Connection("pbx", p.name, f"asterisk:{p.name}", (
            ("host", p.host), ("port", str(p.port)), ("security", p.security),
            ("username", p.username), ("region", p.region), ("area_code", p.area_code or ""),
            ("dial_context", p.dial_context), ("dids", ", ".join(p.dids)),
            ("recordings", str(p.recordings_dir or "")),
        ), extensions=tuple(sorted(p.extensions.items()))))  # fmt: skip
    return shown


def _reason(err: BaseException) -> str:
    """An exception as one line for the page: ours say what happened, others get their type."""
    if isinstance(err, RapportError):
        return str(err)
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if not text.startswith(type(err).__name__) else text


def imap_login_blocking(settings: MailboxSettings) -> str:
    """Log in as the scanner does, then out again."""
    session = ImapSession(settings)
    session.connect_blocking()
    try:
        idle = session.has_idle
    finally:
        session.close_blocking()
    return f"logged in as {settings.username}" + (" (IDLE offered)" if idle else "")


def smtp_login_blocking(relay: RelaySettings) -> str:
    """The outbox's handshake (TLS or STARTTLS, then AUTH when a user is set), then QUIT."""
    context = ssl.create_default_context(cafile=relay.ca_file)
    connection: smtplib.SMTP
    if relay.security == "tls":
        connection = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout_s,
                                      context=context)  # fmt: skip
    else:
        connection = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout_s)
    try:
        if relay.security == "starttls":
            connection.starttls(context=context)
        if relay.username:
            connection.login(relay.username, relay.password or "")
        code, _ = connection.noop()
        if code != 250:
            return f"the relay answered NOOP with {code}"
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            connection.quit()
    done = f"logged in as {relay.username}" if relay.username else "connected (no login set)"
    return f"{done}, {relay.security}"


class _Reached(Exception):
    """Ends an AMI probe: logged in (ok) or the link failed (not ok), with what to say."""

    def __init__(self, ok: bool, message: str) -> None:
        super().__init__(message)
        self.ok = ok
        self.message = message


class _ProbeStatus:
    """A ``ServiceStatus`` that ends the client's run at its first failure."""

    def ready(self, detail: str = "") -> None:
        raise _Reached(True, detail)

    def progress(self, detail: str) -> None:
        pass

    def degraded(self, detail: str) -> None:
        raise _Reached(False, detail)


async def ami_login(settings: AmiSettings) -> str:
    """Connect and log in with the phone service's own client, then log off."""

    async def connected(client: AmiClient) -> None:
        raise _Reached(True, f"logged in as {settings.username} ({client.system_name})")

    client = AmiClient(settings, lambda message, at: None, on_connected=connected)
    try:
        await client.run(_ProbeStatus())
    except _Reached as reached:
        if reached.ok:
            return reached.message
        raise TransientError(reached.message) from None
    return "the link ended"  # run() returns only when cancelled; kept for the type checker


class ConfiguredConnections:
    """The ``ConnectionAdmin`` of a running daemon: its configuration and its supervisor."""

    def __init__(
        self, config: Config, supervisor: Supervisor | None, timeout_s: float = TEST_TIMEOUT_S
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.timeout_s = timeout_s
        self._shown = _shown(config)

    def connections(self) -> Sequence[Connection]:
        return self._shown

    def service_states(self) -> Mapping[str, ServiceState]:
        if self.supervisor is None:
            return {}
        return {name: ServiceState(s.state, s.detail, s.last_error)
                for name, s in sorted(self.supervisor.states().items())}  # fmt: skip

    async def test(self, kind: str, name: str) -> ConnectionTest:
        try:
            async with asyncio.timeout(self.timeout_s):
                message = await self._try(kind, name)
        except TimeoutError:
            return ConnectionTest(False, f"no answer within {self.timeout_s:g}s")
        except Exception as err:  # the page shows any failure; nothing may escape
            return ConnectionTest(False, _reason(err))
        return ConnectionTest(True, message)

    async def _try(self, kind: str, name: str) -> str:
        config = self.config
        if kind == "imap":
            mailbox = next(m for m in config.imap.mailboxes if m.name == name)
            settings = mailbox_settings(config, mailbox)
            return await asyncio.to_thread(imap_login_blocking, settings)
        if kind == "relay" and config.smtp_relay.host:
            relay = dataclasses.replace(relay_settings(config.smtp_relay), timeout_s=self.timeout_s)
            return await asyncio.to_thread(smtp_login_blocking, relay)
        if kind == "pbx":
            pbx = next(p for p in config.asterisk.pbx if p.name == name)
            return await ami_login(ami_settings(pbx))
        raise LookupError(f"no {kind} named {name!r} is configured")
