"""The admin's connection test against real loopback peers: a login that works, one that is
refused (without the secret in what is said), a peer that never answers; and the listing
that leaves every secret out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from daemon.config import Config
from daemon.connections import ConfiguredConnections
from tests.peers.ami import AmiTraceServer
from tests.peers.dovecot import Dovecot
from tests.peers.local import free_port

AMI_SECRET = "ami-secret-0123456789"


def config(**sections: Any) -> Config:
    return Config.model_validate(sections)


def pbx(port: int, secret: str) -> dict[str, Any]:
    return {"asterisk": {"pbx": [{"name": "hq", "host": "127.0.0.1", "port": port,
                                  "username": "crm", "secret": secret}]}}  # fmt: skip


async def test_a_pbx_login_is_tried_with_the_phone_services_own_client() -> None:
    async with AmiTraceServer(secret=AMI_SECRET, system_name="pbx-hq") as server:
        good = ConfiguredConnections(config(**pbx(server.port, AMI_SECRET)), None)
        result = await good.test("pbx", "hq")
        assert result.ok and "logged in as crm" in result.message, result.message
        wrong = ConfiguredConnections(config(**pbx(server.port, "not-the-secret-9876")), None)
        refused = await wrong.test("pbx", "hq")
        assert not refused.ok and "refused login" in refused.message
        assert "not-the-secret-9876" not in refused.message
    closed = ConfiguredConnections(config(**pbx(free_port(), AMI_SECRET)), None)
    down = await closed.test("pbx", "hq")
    assert not down.ok and "cannot connect" in down.message


async def test_a_peer_that_never_answers_is_given_up_after_the_timeout() -> None:
    served = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # accepts, says nothing (no greeting) until the client leaves
        finally:
            writer.close()
            served.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        relay = config(smtp_relay={"host": "127.0.0.1", "port": port, "security": "plain",
                                   "from_address": "crm@rapport.test"})  # fmt: skip
        started = time.monotonic()
        result = await ConfiguredConnections(relay, None, timeout_s=0.5).test("relay", "relay")
        assert not result.ok and "no answer within 0.5s" in result.message
        assert time.monotonic() - started < 2
        # The client's own socket timeout (the same 0.5 s) closes its side soon after.
        await asyncio.wait_for(served.wait(), 5)


class Accepting:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@pytest.fixture
def relay_port() -> Iterator[int]:
    """A relay that offers AUTH in clear (loopback only) and takes crm / relay-pass."""

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:  # fmt: skip
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"crm", b"relay-pass")  # fmt: skip
        return AuthResult(success=good, handled=False)

    port = free_port()
    controller = Controller(Accepting(), hostname="127.0.0.1", port=port,
                            authenticator=authenticator, auth_require_tls=False)  # fmt: skip
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


async def test_the_relay_login_is_tried_as_the_outbox_does(relay_port: int) -> None:
    def relay(password: str) -> Config:
        return config(smtp_relay={"host": "127.0.0.1", "port": relay_port, "security": "plain",
                                  "username": "crm", "password": password,
                                  "from_address": "crm@rapport.test"})  # fmt: skip

    good = await ConfiguredConnections(relay("relay-pass"), None).test("relay", "relay")
    assert good.ok and good.message == "logged in as crm, plain"
    bad = await ConfiguredConnections(relay("wrong-pass-42"), None).test("relay", "relay")
    assert not bad.ok and "535" in bad.message and "wrong-pass-42" not in bad.message


async def test_a_mailbox_login_is_tried_as_the_scanner_does(dovecot: Dovecot) -> None:
    def mailbox(password: str) -> Config:
        return config(imap={"mailboxes": [{
            "name": "sales", "host": dovecot.host, "port": dovecot.port, "security": "plain",
            "username": dovecot.username, "password": password}]})  # fmt: skip

    good = await ConfiguredConnections(mailbox(dovecot.password), None).test("imap", "sales")
    assert good.ok and f"logged in as {dovecot.username}" in good.message
    bad = await ConfiguredConnections(mailbox("wrong-pass-42"), None).test("imap", "sales")
    assert not bad.ok and "login refused" in bad.message and "wrong-pass-42" not in bad.message


def test_the_listing_names_every_peer_and_no_secret() -> None:
    secrets = ("imap-pass-0a1b", "relay-pass-2c3d", "ami-secret-4e5f6a7b")
    listed = ConfiguredConnections(config(
        imap={"mailboxes": [{"name": "sales", "host": "imap.example.cn",
                             "username": "sales@example.cn", "password": secrets[0]},
                            {"name": "o365", "host": "outlook.office365.com",
                             "username": "crm@example.cn", "auth": "xoauth2",
                             "oauth2_token_command": "get-token --secret token-in-argv"}]},
        smtp_relay={"host": "smtp.example.cn", "username": "crm", "password": secrets[1],
                    "from_address": "crm@example.cn"},
        asterisk={"pbx": [{"name": "hq", "host": "10.0.0.5", "port": 5039, "security": "tls",
                           "username": "crm", "secret": secrets[2],
                           "extensions": {"8001": "wang"}}]},
    ), None).connections()  # fmt: skip
    assert [(c.kind, c.name, c.service) for c in listed] == [
        ("imap", "sales", "imap:sales"), ("imap", "o365", "imap:o365"),
        ("relay", "relay", "outbox"), ("pbx", "hq", "asterisk:hq")]  # fmt: skip
    assert listed[-1].extensions == (("8001", "wang"),)
    shown = repr(listed)
    assert "10.0.0.5" in shown and "xoauth2" in shown
    assert not any(s in shown for s in (*secrets, "token-in-argv"))
