"""AmiClient against a real AMI server on a loopback socket that replays Asterisk 22 traces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from panoramisk.message import Message

from asterisk.client import AmiClient, AmiConnection, OriginateUnknown, reconnect_delay
from store.errors import AuthError, TransientError
from tests.peers.ami import (
    FIXTURES,
    AmiTrace,
    AmiTraceServer,
    Rechunk,
    headers,
    live_channels,
    load_trace,
    message,
    split_each_message_at,
)
from tests.peers.tls import self_signed

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no AMI fixtures at {FIXTURES}")

FAST: dict[str, Any] = {
    "ping_interval": 0.2,
    "ping_timeout": 0.2,
    "backoff_base": 0.02,
    "backoff_cap": 0.1,
}


class Status:
    """A ``ServiceStatus`` that remembers what it was told, in order."""

    def __init__(self) -> None:
        self.history: list[tuple[str, str, float]] = []

    def ready(self, detail: str = "") -> None:
        self.history.append(("ready", detail, time.monotonic()))

    def progress(self, detail: str) -> None:
        self.history.append(("progress", detail, time.monotonic()))

    def degraded(self, detail: str) -> None:
        self.history.append(("degraded", detail, time.monotonic()))

    def count(self, kind: str) -> int:
        return sum(1 for k, _, _ in self.history if k == kind)


async def until(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    """Wait for a condition that the client's callbacks (or the server) make true."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail(
        f"the condition on line {condition.__code__.co_firstlineno} stayed false {within_s}s"
    )


@contextlib.asynccontextmanager
async def running(client: AmiClient, status: Status) -> AsyncIterator[asyncio.Task[None]]:
    """The client's ``run`` as a task, cancelled (and so closed) on the way out."""
    async with asyncio.TaskGroup() as group:
        task = group.create_task(client.run(status), name=client.name)
        try:
            yield task
        finally:
            task.cancel()


def expected(raw: bytes) -> dict[str, Any]:
    """A message's headers as panoramisk shapes them: a repeated header becomes a list."""
    out: dict[str, Any] = {}
    for key, value in headers(raw):
        if key in out:
            old = out[key]
            out[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            out[key] = value
    return out


def fields(m: Message) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != "content"}


def replayed(trace: AmiTrace, start: int = 0, stop: int | None = None) -> list[bytes]:
    stop = len(trace.messages) if stop is None else stop
    return [m.raw for m in trace.events if start <= m.i < stop]


@pytest.mark.parametrize(
    ("scenario", "rechunk"),
    [
        ("inbound_answered", None),
        ("queue_answered", None),
        ("transfer_attended", None),
        ("transfer_attended", split_each_message_at(1, 7, 8, 100)),
    ],
    ids=["inbound_answered", "queue_answered", "transfer_attended", "transfer_attended-cut"],
)
async def test_a_trace_arrives_as_its_events_in_order(
    scenario: str, rechunk: Rechunk | None
) -> None:
    """Recorded segmentation (a pause between reads), or every message cut in pieces."""
    trace = load_trace(scenario)
    got: list[tuple[Message, float]] = []
    gap_s = 0.001 if rechunk is None else 0.0
    async with AmiTraceServer(trace, gap_s=gap_s, rechunk=rechunk) as server:
        client = AmiClient(server.settings(), lambda m, t: got.append((m, t)))
        async with running(client, Status()):
            await until(lambda: len(got) >= len(trace.events))
            await asyncio.sleep(0.02)  # nothing more may follow
    assert [fields(m) for m, _ in got] == [expected(raw) for raw in replayed(trace)]
    times = [t for _, t in got]
    assert times == sorted(times)
    assert time.time() - 5 < times[0] <= times[-1] <= time.time()


async def test_framing_survives_one_byte_reads() -> None:
    """Every message boundary and every UTF-8 sequence cut at every byte."""
    trace = load_trace("transfer_attended")
    got: list[Message] = []
    conn = AmiConnection(lambda m, t: got.append(m))
    conn.release()
    stream = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(replayed(trace))
    stream += message(("Event", "Newchannel"), ("CallerIDName", "张伟"), ("Variable", "A=1"),
                      ("Variable", "B=2"))  # fmt: skip
    for n in range(len(stream)):
        conn.data_received(stream[n : n + 1])
    assert conn.version == "11.0.0"
    assert [fields(m) for m in got[:-1]] == [expected(raw) for raw in replayed(trace)]
    assert got[-1]["CallerIDName"] == "张伟"
    assert got[-1]["Variable"] == ["A=1", "B=2"]


async def test_a_failing_handler_loses_neither_the_link_nor_later_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = load_trace("inbound_answered")
    names: list[str] = []

    def on_event(m: Message, received_at: float) -> None:
        names.append(m["Event"])
        if len(names) == 10:
            raise ValueError("a bug in the correlator")

    async with AmiTraceServer(trace) as server:
        settings = server.settings()
        client = AmiClient(settings, on_event)
        with caplog.at_level(logging.ERROR, logger="asterisk.client"):
            async with running(client, Status()):
                await until(lambda: len(names) >= len(trace.events))
                assert client.connected
        assert server.connections == 1
    assert names == [m.name for m in trace.events]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert settings.secret not in caplog.text


async def test_a_chinese_caller_name_split_across_reads_arrives_whole() -> None:
    got: list[Message] = []
    async with AmiTraceServer() as server:
        client = AmiClient(server.settings(), lambda m, t: got.append(m))
        status = Status()
        async with running(client, status):
            await until(lambda: status.count("ready") == 1)
            raw = message(("Event", "NewCallerid"), ("Privilege", "call,all"),
                          ("CallerIDNum", "13812345678"), ("CallerIDName", "张伟"))  # fmt: skip
            cut = raw.index("张".encode()) + 1  # inside the three bytes of 张
            await server.inject(raw, cuts=[cut, cut + 3], gap_s=0.03)
            await until(lambda: len(got) == 1)
    assert got[0]["CallerIDName"] == "张伟"
    assert got[0]["CallerIDNum"] == "13812345678"


async def test_a_silent_peer_is_dropped_within_ping_interval_plus_timeout() -> None:
    async with AmiTraceServer() as server:
        client = AmiClient(server.settings(**FAST), lambda m, t: None)
        status = Status()
        async with running(client, status):
            await until(lambda: status.count("ready") == 1)
            server.silence()
            silenced = time.monotonic()
            await until(lambda: status.count("degraded") == 1)
            _, detail, when = status.history[-1]
            assert when - silenced <= 0.2 + 0.2 + 0.4  # slack for a loaded 2-core CI machine
            assert "Ping" in detail
            await until(lambda: status.count("ready") == 2)
        assert server.connections == 2


async def test_a_refused_login_raises_auth_error_once() -> None:
    async with AmiTraceServer(secret="right") as server:
        settings = server.settings(secret="wrong-secret", **FAST)
        client = AmiClient(settings, lambda m, t: None)
        status = Status()
        started = time.monotonic()
        with pytest.raises(AuthError, match="Authentication failed") as caught:
            await client.run(status)
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.2)
        assert server.connections == 1
        assert status.count("ready") == 0
    assert "wrong-secret" not in str(caught.value)
    assert "wrong-secret" not in repr(settings)


async def test_a_dropped_link_reconnects_and_on_connected_runs_before_later_events() -> None:
    trace = load_trace("inbound_answered")
    drop_at, resume_at = 60, 90
    journal: list[Any] = []
    snapshots: list[list[Message]] = []
    finished_at: list[float] = []
    arrivals: list[float] = []

    async def on_connected(client: AmiClient) -> None:
        journal.append("connected")
        pong = await client.send_action({"Action": "Ping"})
        assert isinstance(pong, Message) and pong["Ping"] == "Pong"
        answer = await client.send_action({"Action": "CoreShowChannels"})
        assert isinstance(answer, list)
        snapshots.append(answer)
        if len(snapshots) == 2:
            await asyncio.sleep(0.1)  # the replay goes on meanwhile: its events must wait
        finished_at.append(time.time())
        journal.append("rebuilt")

    def on_event(m: Message, received_at: float) -> None:
        journal.append(m)
        arrivals.append(received_at)

    async with AmiTraceServer(
        trace, drop_at=drop_at, resume_at=resume_at, replay_after="CoreShowChannels", gap_s=0.01
    ) as server:
        client = AmiClient(
            server.settings(**FAST), on_event, on_connected, lambda: journal.append("lost")
        )
        status = Status()
        async with running(client, status):
            await until(lambda: server.replay_done.is_set() and status.count("ready") == 2)
            delivered = len(replayed(trace, 0, drop_at)) + len(replayed(trace, resume_at))
            await until(lambda: len(journal) == delivered + 5)  # 2 x (connected, rebuilt), lost
        assert server.connections == 2

    assert [k for k, _, _ in status.history] == ["ready", "degraded", "ready"]
    first = journal.index("lost")
    assert journal[:2] == ["connected", "rebuilt"]
    assert journal[first + 1 : first + 3] == ["connected", "rebuilt"]
    events = [fields(m) for m in journal if isinstance(m, Message)]
    assert events == [expected(raw) for raw in replayed(trace, 0, drop_at)] + [
        expected(raw) for raw in replayed(trace, resume_at)
    ]
    # Events of the second link arrived while on_connected ran, and were held until it ended.
    second = arrivals[len(replayed(trace, 0, drop_at)) :]
    assert second and second[0] < finished_at[1]
    # The snapshot is the channels alive before the first replayed event.
    listed, alive = snapshots[1], live_channels(trace, resume_at)
    assert alive
    assert listed[0]["EventList"] == "start"
    assert listed[-1]["Event"] == "CoreShowChannelsComplete"
    assert listed[-1]["ListItems"] == str(len(alive))
    assert [m["Uniqueid"] for m in listed[1:-1]] == [c["Uniqueid"] for c in alive]
    assert [len(s) for s in snapshots[:1]] == [2]  # nothing was alive at first


def test_reconnect_delays_grow_to_the_cap_with_full_jitter() -> None:
    top = [reconnect_delay(n, 0.5, 30.0, jitter=lambda: 1.0) for n in range(1, 10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert reconnect_delay(5, 0.5, 30.0, jitter=lambda: 0.25) == 2.0
    assert reconnect_delay(5, 0.5, 30.0, jitter=lambda: 0.0) == 0.0


async def test_an_action_whose_link_drops_fails_as_transient() -> None:
    async with AmiTraceServer(originate="drop") as server:
        client = AmiClient(server.settings(**FAST), lambda m, t: None)
        status = Status()
        async with running(client, status):
            await until(lambda: status.count("ready") == 1)
            with pytest.raises(TransientError, match="before Originate was answered") as caught:
                await client.send_action({"Action": "Originate", "Channel": "Local/1@x"})
            assert not isinstance(caught.value, OriginateUnknown)
            await until(lambda: status.count("ready") == 2)
            pong = await client.send_action({"Action": "Ping"}, timeout=1.0)
            assert isinstance(pong, Message) and pong.success


async def test_an_unanswered_originate_is_unknown_and_never_sent_again() -> None:
    async with AmiTraceServer(originate="drop") as server:
        client = AmiClient(server.settings(**FAST), lambda m, t: None)
        status = Status()
        call = {"Channel": "Local/1004@phones", "Exten": "13812345678", "Context": "pstn"}
        with pytest.raises(TransientError, match="not connected") as not_sent:
            await client.originate(call)
        assert not isinstance(not_sent.value, OriginateUnknown)
        async with running(client, status):
            await until(lambda: status.count("ready") == 1)
            with pytest.raises(OriginateUnknown, match="may or may not"):
                await client.originate(call)
            await until(lambda: status.count("ready") == 2)
            server.originate_mode = "answer"
            await asyncio.sleep(0.5)  # two pings on the new link, and no Originate
            assert len(server.originates) == 1
            answer = await client.originate(call)
            assert answer["Message"] == "Originate successfully queued"
        await until(lambda: server.actions[-1] == [("Action", "Logoff")])  # a clean stop
        assert len(server.originates) == 2
        assert server.originates[0]["Async"] == "true"
        assert server.originates[0]["Exten"] == "13812345678"


async def test_two_pbxs_at_once_keep_their_events_apart() -> None:
    traces = {"east": load_trace("inbound_answered"), "west": load_trace("outbound_answered")}
    got: dict[str, list[tuple[str, Message]]] = {"east": [], "west": []}
    clients: dict[str, AmiClient] = {}
    async with (
        # Both at 1/100 of real time, so their events interleave as two live PBXs' would.
        AmiTraceServer(traces["east"], system_name="pbx-east", time_scale=0.01) as east,
        AmiTraceServer(traces["west"], system_name="pbx-west", time_scale=0.01) as west,
    ):

        def collector(name: str) -> Callable[[Message, float], None]:
            """Each event with the system name its client holds when it arrives."""
            return lambda m, t: got[name].append((clients[name].system_name, m))

        for name, server in (("east", east), ("west", west)):
            clients[name] = AmiClient(server.settings(name), collector(name))
        async with running(clients["east"], Status()), running(clients["west"], Status()):
            await until(lambda: all(len(got[n]) >= len(traces[n].events) for n in ("east", "west")))
    assert clients["east"].system_name == "pbx-east"
    assert clients["west"].system_name == "pbx-west"
    assert clients["east"].name == "asterisk:east"
    for name in ("east", "west"):
        assert {system for system, _ in got[name]} == {f"pbx-{name}"}
        assert [m["SystemName"] for _, m in got[name]] == [f"pbx-{name}"] * len(got[name])
        assert [m["Event"] for _, m in got[name]] == [m.name for m in traces[name].events]


async def test_ami_over_tls_with_the_pbxs_own_ca(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    trace = load_trace("inbound_answered")
    got: list[Message] = []
    async with AmiTraceServer(trace, tls=context) as server:
        client = AmiClient(
            server.settings(tls=True, ca_file=cert, **FAST), lambda m, t: got.append(m)
        )
        status = Status()
        async with running(client, status):
            await until(lambda: len(got) == len(trace.events), within_s=5)
        # Without the PBX's CA the certificate is refused: no login, retried as transient.
        untrusting = AmiClient(server.settings(tls=True, **FAST), lambda m, t: None)
        doubtful = Status()
        async with running(untrusting, doubtful):
            await until(lambda: doubtful.count("degraded") >= 1, within_s=3)
        assert doubtful.count("ready") == 0
        assert "certificate" in doubtful.history[0][1].lower()
    assert server.logins == 1
