"""The phone in the browser: the screen-pop websocket, click-to-dial, recordings.

``/ws/phone`` is one websocket per agent's browser.  A signed-in browser of
this site is known by its session cookie (the Origin must be this site); an
integration's first message authenticates (``{"type": "auth", "token": ...}``;
the token never travels in the URL).  From then on the socket receives the phone events addressed to
that user only: ``CallRinging`` (the number at once), ``CallerIdentified``
(the caller's card), ``CallRingEnded``, ``CallAnswered`` and ``CallEnded``.  It may send
``{"type": "dial", "number": ..., "origin": "contact:12"}``, which becomes a
``DialRequested`` on the bus for the PBX side (which checks the user may call);
the socket then hears ``DialStarted`` or ``DialFailed`` (without the reason,
which is the server's, for its log) for that request,
and ``{"type": "link", "call": ..., "record": "lead:5"}`` when the agent made a
record from the pop, so the call is filed on it too.

``/recordings/<token>`` serves a call's recording through a signed, expiring
link: the token names the call, never a path, and the file must lie inside its
PBX's configured recordings folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path

from aiohttp import WSMsgType, web

from store.api_tokens import user_for_token
from store.bus import BUS_RECONNECTED
from store.db import Store
from store.models import Call
from store.signed_links import sign_link, verify_link
from web.auth import AUTH_STORE_KEY, browser_user

log = logging.getLogger(__name__)

PHONE_EVENTS = ("CallRinging", "CallerIdentified", "CallRingEnded", "CallAnswered", "CallEnded",
                "DialStarted")  # fmt: skip
DIAL_FAILED = "DialFailed"  # carries the request, not the user: matched by this socket's requests
AUTH_TIMEOUT_S = 10.0
RECORDING_PURPOSE = "recording"
RECORDING_TTL_S = 3600.0
AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".gsm": "audio/x-gsm",
    ".ogg": "audio/ogg",
}


class PhoneConfig:
    """What the phone pages need beyond the store: the link secret, recordings folders."""

    def __init__(self, secret: bytes, recordings: Mapping[str, Path] | None = None) -> None:
        self.secret = secret
        self.recordings = {pbx: Path(folder) for pbx, folder in (recordings or {}).items()}


STORE_KEY = web.AppKey("phone_store", Store)
CONFIG_KEY = web.AppKey("phone_config", PhoneConfig)


def recording_link(config: PhoneConfig, call_id: int, ttl_s: float = RECORDING_TTL_S) -> str:
    """The path of a signed link to a call's recording, valid for ``ttl_s`` seconds."""
    return f"/recordings/{sign_link(config.secret, RECORDING_PURPOSE, str(call_id), ttl_s)}"


async def _authenticate(ws: web.WebSocketResponse, store: Store) -> int | None:
    try:
        first = await ws.receive(timeout=AUTH_TIMEOUT_S)
    except TimeoutError:
        return None
    if first.type != WSMsgType.TEXT:
        return None
    try:
        message = json.loads(first.data)
    except ValueError:
        return None
    token = message.get("token") if isinstance(message, dict) else None
    if message.get("type") != "auth" or not isinstance(token, str):
        return None
    async with store.session() as session, session.begin():
        user = await user_for_token(session, token)
        return user.id if user is not None else None


async def phone_socket(request: web.Request) -> web.WebSocketResponse:
    store = request.app[STORE_KEY]
    # A signed-in browser of this site is known by its session; integrations send a token.
    browser = await browser_user(request) if request.app.get(AUTH_STORE_KEY) else None
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    user_id = browser if browser is not None else await _authenticate(ws, store)
    if user_id is None:
        await ws.send_json({"type": "error", "reason": "authentication failed"})
        await ws.close(code=4401)
        return ws
    sub = store.bus.subscribe(*PHONE_EVENTS, DIAL_FAILED, BUS_RECONNECTED)
    await ws.send_json({"type": "ready", "user_id": user_id})
    requested: set[str] = set()  # dial requests made on this socket

    async def forward() -> None:
        async for event in sub:
            if event.type == BUS_RECONNECTED:
                await ws.send_json({"type": "resync"})
            elif event.type == DIAL_FAILED:
                if event.data.get("request") in requested:
                    await ws.send_json({"type": DIAL_FAILED, "request": event.data["request"]})
            elif event.data.get("user_id") == user_id:
                await ws.send_str(
                    json.dumps({"type": event.type, **event.data}, ensure_ascii=False)
                )

    pushing = asyncio.create_task(forward(), name=f"phone-socket-{user_id}")
    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            await _client_message(store, ws, user_id, frame.data, requested)
    finally:
        pushing.cancel()
        sub.close()
        await asyncio.gather(pushing, return_exceptions=True)
    return ws


async def _client_message(
    store: Store, ws: web.WebSocketResponse, user_id: int, text: str, requested: set[str]
) -> None:
    try:
        message = json.loads(text)
    except ValueError:
        await ws.send_json({"type": "error", "reason": "not JSON"})
        return
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "link":
        await _link(store, ws, message)
        return
    if kind != "dial":
        await ws.send_json({"type": "error", "reason": "unknown message"})
        return
    number = message.get("number")
    if not isinstance(number, str) or not any(ch.isdigit() for ch in number):
        await ws.send_json({"type": "error", "reason": "a number to dial is needed"})
        return
    origin = message.get("origin")
    pbx = message.get("pbx")
    request = uuid.uuid4().hex
    requested.add(request)  # before the PBX side can answer it
    await request_dial(
        store, user_id, number, origin if isinstance(origin, str) else None,
        pbx if isinstance(pbx, str) else None, request=request,
    )  # fmt: skip
    await ws.send_json({"type": "dialling", "request": request})


async def request_dial(
    store: Store, user_id: int, number: str, origin: str | None, pbx: str | None,
    request: str | None = None,
) -> str:  # fmt: skip
    """Ask the phone side to call ``number`` for ``user_id`` (it checks they may); its id."""
    request = request or uuid.uuid4().hex
    await store.bus.publish(
        "DialRequested", request=request, user_id=user_id, number=number, origin=origin, pbx=pbx
    )
    return request


async def _link(store: Store, ws: web.WebSocketResponse, message: dict[str, object]) -> None:
    """The agent made a record from the pop: the call will be filed on it as well."""
    call, record = message.get("call"), message.get("record")
    if not (isinstance(call, str) and isinstance(record, str) and ":" in record):
        await ws.send_json({"type": "error", "reason": "link needs a call and a record"})
        return
    pbx = message.get("pbx") if isinstance(message.get("pbx"), str) else None
    await store.bus.publish("CallLinked", call=call, record=record, pbx=pbx)
    await ws.send_json({"type": "linked", "call": call, "record": record})


async def recording(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    value = verify_link(config.secret, RECORDING_PURPOSE, request.match_info["token"])
    if value is None or not value.isdigit():
        raise web.HTTPNotFound()
    async with request.app[STORE_KEY].session() as session:
        call = await session.get(Call, int(value))
    folder = config.recordings.get(call.pbx) if call is not None else None
    if call is None or folder is None or not call.recording:
        raise web.HTTPNotFound()
    root = folder.resolve()
    path = (root / call.recording).resolve()  # an absolute recording path stays absolute
    if not path.is_relative_to(root):
        # The PBX's own path (/var/spool/asterisk/monitor/x.wav) where the folder is
        # mounted elsewhere here: the file by its name, still inside the folder.
        path = (root / Path(call.recording).name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    response = web.FileResponse(path)
    response.content_type = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def add_phone_routes(app: web.Application, store: Store, config: PhoneConfig) -> None:
    app[STORE_KEY] = store
    app[CONFIG_KEY] = config
    app.router.add_get("/ws/phone", phone_socket)
    app.router.add_get("/recordings/{token}", recording)
