"""The phone websocket reaches the ringing agent only; recordings only by signed link."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from store.api_tokens import create_api_token
from store.db import Store
from store.models import Call, Direction
from store.signed_links import sign_link, verify_link
from store.users import create_user
from web.app import create_app
from web.phone import PhoneConfig, recording_link

SECRET = b"k" * 32


async def _tokens(store: Store, *names: str) -> dict[str, tuple[int, str]]:
    out = {}
    async with store.session() as session, session.begin():
        for name in names:
            user = await create_user(session, name, None)
            out[name] = (user.id, await create_api_token(session, name, "phone panel"))
    return out


async def test_rings_reach_only_the_agent_they_are_for(store: Store) -> None:
    users = await _tokens(store, "alice", "bob")
    async with TestClient(TestServer(create_app(store, PhoneConfig(SECRET)))) as client:
        sockets = {}
        for name, (_, token) in users.items():
            ws = await client.ws_connect("/ws/phone")
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws.receive_json(timeout=2))["type"] == "ready"
            sockets[name] = ws
        alice_id, bob_id = users["alice"][0], users["bob"][0]
        await store.bus.publish(
            "CallRinging", user_id=alice_id, call="1.1", number="+8613812345678"
        )
        await store.bus.publish("CallerIdentified", user_id=alice_id, call="1.1",
                                matches=[{"name": "张伟"}, {"name": "张伟(家)"}])  # fmt: skip
        await store.bus.publish("CallRinging", user_id=bob_id, call="2.1", number="10086")
        ring = await sockets["alice"].receive_json(timeout=2)
        assert (ring["type"], ring["call"], ring["number"]) == (
            "CallRinging",
            "1.1",
            "+8613812345678",
        )
        card = await sockets["alice"].receive_json(timeout=2)
        assert [m["name"] for m in card["matches"]] == ["张伟", "张伟(家)"]
        bobs = await sockets["bob"].receive_json(timeout=2)
        assert bobs["call"] == "2.1"  # bob never saw alice's call: his first frame is his own
        await store.bus.publish("CallRingEnded", user_id=alice_id, call="1.1")
        assert (await sockets["alice"].receive_json(timeout=2))["type"] == "CallRingEnded"

        # Click-to-dial from the socket becomes a DialRequested for the PBX side.
        async with store.bus.subscribe("DialRequested") as requests:
            await sockets["alice"].send_json({"type": "dial", "number": "138 1234 5678",
                                              "origin": "contact:7"})  # fmt: skip
            event = await asyncio.wait_for(requests.get(), 2)
        assert (event.data["user_id"], event.data["origin"]) == (alice_id, "contact:7")
        assert (await sockets["alice"].receive_json(timeout=2))["type"] == "dialling"

        # A lead made from the pop is tied to the live call.
        async with store.bus.subscribe("CallLinked") as links:
            await sockets["alice"].send_json({"type": "link", "call": "1.1", "record": "lead:9"})
            linked = await asyncio.wait_for(links.get(), 2)
        assert (linked.data["call"], linked.data["record"]) == ("1.1", "lead:9")
        assert (await sockets["alice"].receive_json(timeout=2))["type"] == "linked"
        for ws in sockets.values():
            await ws.close()


async def test_a_wrong_token_is_refused_and_hears_nothing(store: Store) -> None:
    await _tokens(store, "carol")
    async with TestClient(TestServer(create_app(store, PhoneConfig(SECRET)))) as client:
        ws = await client.ws_connect("/ws/phone")
        await ws.send_json({"type": "auth", "token": "rpt_not-a-token"})
        assert (await ws.receive_json(timeout=2))["type"] == "error"
        closing = await ws.receive(timeout=2)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 4401


def test_signed_links_expire_and_cannot_be_altered() -> None:
    now = time.time()
    token = sign_link(SECRET, "recording", "42", 60, now=now)
    assert verify_link(SECRET, "recording", token, now=now + 59) == "42"
    assert verify_link(SECRET, "recording", token, now=now + 61) is None
    assert verify_link(b"other" * 8, "recording", token, now=now) is None
    assert verify_link(SECRET, "other-purpose", token, now=now) is None
    forged = sign_link(SECRET, "recording", "43", 60, now=now).split(".")[0]
    assert verify_link(SECRET, "recording", forged + token[token.index(".") :], now=now) is None
    assert verify_link(SECRET, "recording", "garbage", now=now) is None


async def test_recordings_are_served_by_signed_link_only(store: Store, tmp_path: Path) -> None:
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    (monitor / "in-1.wav").write_bytes(b"RIFF....WAVE")
    (tmp_path / "secret.txt").write_text("not a recording")
    async with store.session() as session, session.begin():
        good = Call(
            pbx="hq",
            uniqueid="1.1",
            direction=Direction.INBOUND,
            started_at=_now(),
            recording=str(monitor / "in-1.wav"),
        )
        sneaky = Call(
            pbx="hq",
            uniqueid="2.1",
            direction=Direction.INBOUND,
            started_at=_now(),
            recording="../secret.txt",
        )
        elsewhere = Call(
            pbx="hq",
            uniqueid="3.1",
            direction=Direction.INBOUND,
            started_at=_now(),
            recording="/var/spool/asterisk/monitor/in-1.wav",
        )
        session.add_all([good, sneaky, elsewhere])
    config = PhoneConfig(SECRET, {"hq": monitor})
    async with TestClient(TestServer(create_app(store, config))) as client:
        resp = await client.get(recording_link(config, good.id))
        assert resp.status == 200 and await resp.read() == b"RIFF....WAVE"
        assert resp.headers["Content-Type"] == "audio/wav"
        assert "no-store" in resp.headers["Cache-Control"]
        # A link for a call whose recording points outside the folder, a forged link,
        # an expired one: all 404.
        assert (await client.get(recording_link(config, sneaky.id))).status == 404
        # The PBX's own path, with the folder mounted elsewhere here: found by its name.
        moved = await client.get(recording_link(config, elsewhere.id))
        assert moved.status == 200 and await moved.read() == b"RIFF....WAVE"
        assert (await client.get(f"/recordings/{good.id}")).status == 404
        assert (await client.get(recording_link(config, good.id, ttl_s=-1))).status == 404


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_a_signed_in_browser_of_this_site_is_known_by_its_session(store: Store) -> None:
    from tests.web.browsing import make_user, sign_in

    wang = await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store, PhoneConfig(SECRET)))) as client:
        await sign_in(client, "wang")
        here = f"http://{client.host}:{client.port}"
        ws = await client.ws_connect("/ws/phone", origin=here)
        assert await ws.receive_json(timeout=2) == {"type": "ready", "user_id": wang}
        await store.bus.publish("CallRinging", user_id=wang, call="9.1", number="13800138000")
        assert (await ws.receive_json(timeout=2))["call"] == "9.1"
        await ws.close()
        # Another site's page cannot ride on the cookie: it is asked for a token like anyone.
        foreign = await client.ws_connect("/ws/phone", origin="https://evil.example")
        await foreign.send_json({"type": "auth", "token": "rpt_forged"})
        said = await foreign.receive_json(timeout=2)
        assert said == {"type": "error", "reason": "authentication failed"}
        await foreign.close()
        # No Origin at all (not a browser): the cookie is not enough either.
        bare = await client.ws_connect("/ws/phone")
        await bare.send_json({"type": "auth", "token": "rpt_forged"})
        assert (await bare.receive_json(timeout=2))["type"] == "error"
        await bare.close()
        # Same host, another port: another origin.
        other_port = f"http://{client.host}:{client.port + 1}"
        aside = await client.ws_connect("/ws/phone", origin=other_port)
        await aside.send_json({"type": "auth", "token": "rpt_forged"})
        assert (await aside.receive_json(timeout=2))["type"] == "error"
        await aside.close()


async def test_behind_a_proxy_the_public_address_is_this_site(store: Store) -> None:
    from tests.web.browsing import make_user, sign_in

    wang = await make_user(store, "wang", "agent")
    app = create_app(store, PhoneConfig(SECRET), public_url="https://crm.example.cn/")
    async with TestClient(TestServer(app)) as client:
        await sign_in(client, "wang")
        # The proxy forwards to 127.0.0.1:port; the browser's Origin is the public name.
        ws = await client.ws_connect("/ws/phone", origin="https://crm.example.cn")
        assert await ws.receive_json(timeout=2) == {"type": "ready", "user_id": wang}
        await ws.close()
        for origin in ("http://crm.example.cn", "https://crm.example.cn.evil.example"):
            other = await client.ws_connect("/ws/phone", origin=origin)
            await other.send_json({"type": "auth", "token": "rpt_forged"})
            assert (await other.receive_json(timeout=2))["type"] == "error", origin
            await other.close()


async def test_a_dial_hears_back_on_the_socket_that_asked_only(store: Store) -> None:
    users = await _tokens(store, "dan", "eve")
    async with TestClient(TestServer(create_app(store, PhoneConfig(SECRET)))) as client:
        sockets = {}
        for name, (_, token) in users.items():
            ws = await client.ws_connect("/ws/phone")
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws.receive_json(timeout=2))["type"] == "ready"
            sockets[name] = ws
        dan_id = users["dan"][0]
        async with store.bus.subscribe("DialRequested") as requests:
            await sockets["dan"].send_json({"type": "dial", "number": "13800138000"})
            asked = await asyncio.wait_for(requests.get(), 2)
            await sockets["dan"].send_json({"type": "dial", "number": "10086"})
            second = await asyncio.wait_for(requests.get(), 2)
        first = await sockets["dan"].receive_json(timeout=2)
        assert first == {"type": "dialling", "request": asked.data["request"]}
        assert (await sockets["dan"].receive_json(timeout=2))["type"] == "dialling"
        # The PBX side answers each request; the reason is for the server's log only.
        await store.bus.publish("DialFailed", request=asked.data["request"],
                                reason="user 1 may not place calls")  # fmt: skip
        await store.bus.publish("DialStarted", request=second.data["request"], user_id=dan_id,
                                channel_id="rapport-1", number="10086", origin=None)  # fmt: skip
        failed = await sockets["dan"].receive_json(timeout=2)
        assert failed == {"type": "DialFailed", "request": asked.data["request"]}
        started = await sockets["dan"].receive_json(timeout=2)
        assert (started["type"], started["channel_id"]) == ("DialStarted", "rapport-1")
        # Eve asked nothing: her socket stays quiet through both.
        await store.bus.publish("CallRinging", user_id=users["eve"][0], call="3.1", number="1")
        assert (await sockets["eve"].receive_json(timeout=2))["type"] == "CallRinging"
        for ws in sockets.values():
            await ws.close()
