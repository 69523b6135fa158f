"""SmtpIngress: accept mail over SMTP or LMTP on our own loop and journal it before 250.

aiosmtpd's protocol class runs on the daemon's loop through
``loop.create_server`` (its Controller would start a thread and a loop of its
own).  Recipients outside the configured domains are refused at RCPT time
(``550 5.7.1``), oversize mail at DATA (``552``, aiosmtpd's size limit), and
when the store cannot take the message we answer ``451 4.3.0`` so the sending
server keeps it and retries (RFC 5321 section 4.2.5): nothing is lost.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from store.db import Store
from store.errors import TransientError
from store.journal import journal_inbound
from store.service import ServiceStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpIngressSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    # Accepted recipient domains (or whole addresses); empty accepts every recipient.
    domains: Sequence[str] = field(default_factory=tuple)
    max_message_size: int = 25 * 1024 * 1024
    timeout_s: float = 300.0
    lmtp: bool = False
    hostname: str = "rapport.localhost"
    # STARTTLS with this certificate chain and key (PEM files); required when require_tls.
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False
    # SMTP AUTH (PLAIN/LOGIN, only after STARTTLS): required of every client when set.
    auth_username: str | None = None
    auth_password: str | None = None


def accepts(recipient: str, domains: Sequence[str]) -> bool:
    """Whether a recipient address is one we take mail for."""
    if not domains:
        return True
    address = recipient.strip().strip("<>").lower()
    domain = address.rpartition("@")[2]
    wanted = {d.lower().lstrip("@") for d in domains}
    return address in wanted or domain in wanted


class IngressHandler:
    """aiosmtpd handler hooks: cheap checks at RCPT, the journal at DATA."""

    def __init__(self, store: Store, settings: SmtpIngressSettings) -> None:
        self.store = store
        self.settings = settings

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not accepts(address, self.settings.domains):
            return "550 5.7.1 Recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        queue_id = uuid.uuid4().hex
        try:
            receipt = await journal_inbound(self.store, f"smtp:{queue_id}", raw)
        except TransientError as err:
            log.warning("SMTP message not journalled, sender told to retry: %s", err)
            return "451 4.3.0 Temporary failure, please try again later"
        log.info("SMTP message journalled as %s (%d bytes)", receipt.journal_id, len(raw))
        return f"250 2.0.0 OK queued as {queue_id}"


class _StartTlsOnOwnLoop:
    """STARTTLS through ``loop.start_tls``.

    aiosmtpd 1.4 wires its TLS layer by hand from asyncio's private SSLProtocol,
    which no longer completes the handshake on Python 3.11 (the client times
    out).  The public ``start_tls`` does the handshake; the rest is what
    aiosmtpd's own ``connection_made`` does after STARTTLS (RFC 3207 4.2 reset).
    """

    async def smtp_STARTTLS(self: Any, arg: str) -> None:
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        plain = self.transport
        tls = await self.loop.start_tls(plain, self, self.tls_context, server_side=True)
        if tls is None:
            raise ConnectionResetError("TLS handshake did not complete")
        self._original_transport = plain
        self._tls_protocol = tls._ssl_protocol
        self.connection_made(tls)


class TlsSMTP(_StartTlsOnOwnLoop, SMTP):
    pass


class TlsLMTP(_StartTlsOnOwnLoop, LMTP):
    pass


class _Authenticator:
    """Checks SMTP AUTH against the one configured account, in constant time."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username.encode()
        self.password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(auth_data.login, self.username) & hmac.compare_digest(
            auth_data.password, self.password
        )
        # handled=False: aiosmtpd answers (235 or 535); True would mean we already had.
        return AuthResult(success=bool(ok), handled=False)


class SmtpIngress:
    """The inbound SMTP (or LMTP) listener as a supervised service."""

    name = "smtp-ingress"

    def __init__(self, store: Store, settings: SmtpIngressSettings) -> None:
        self.store = store
        self.settings = settings

    def _protocol(self) -> SMTP:
        kwargs: dict[str, Any] = {
            "data_size_limit": self.settings.max_message_size,
            "hostname": self.settings.hostname,
            "timeout": self.settings.timeout_s,
            "enable_SMTPUTF8": True,
        }
        settings = self.settings
        if settings.tls_cert and settings.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = settings.require_tls
        if settings.auth_username and settings.auth_password is not None:
            kwargs["authenticator"] = _Authenticator(settings.auth_username, settings.auth_password)
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = True
        handler = IngressHandler(self.store, settings)
        return TlsLMTP(handler, **kwargs) if settings.lmtp else TlsSMTP(handler, **kwargs)

    async def run(self, status: ServiceStatus) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                self._protocol, self.settings.host, self.settings.port
            )
        except OSError as err:
            raise TransientError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {err.strerror}"
            ) from err
        async with server:
            status.ready(f"listening on {self.settings.host}:{self.settings.port}")
            await server.serve_forever()
