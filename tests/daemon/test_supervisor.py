"""The supervisor: backoff on a fake clock, auth errors stop, shutdown goes in stages."""

from __future__ import annotations

import asyncio
import logging

import pytest

from daemon.supervisor import STAGE_LISTENERS, STAGE_WORKERS, Supervisor
from store.errors import AuthError, TransientError
from store.service import ServiceStatus


class FakeSleep:
    """Records backoff delays and returns at once: no test waits for a real backoff."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class Flaky:
    """Fails ``failures`` times with the given error, then serves until cancelled."""

    def __init__(self, name: str, failures: int, error: Exception) -> None:
        self.name = name
        self.failures = failures
        self.error = error
        self.runs = 0
        self.serving = asyncio.Event()

    async def run(self, status: ServiceStatus) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise self.error
        status.ready("serving")
        self.serving.set()
        await asyncio.Event().wait()


def _supervisor(sleep: FakeSleep) -> Supervisor:
    return Supervisor(sleep=sleep, jitter=lambda: 1.0, backoff_base_s=1.0, backoff_cap_s=8.0)


async def test_transient_failures_back_off_exponentially_then_recover(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleep = FakeSleep()
    sup = _supervisor(sleep)
    service = Flaky("imap:sales", failures=5, error=TransientError("connection refused"))
    sup.add(service)
    caplog.set_level(logging.DEBUG)
    runner = asyncio.create_task(sup.run())
    await asyncio.wait_for(service.serving.wait(), 5)
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # capped
    state = sup.states()["imap:sales"]
    assert (state.state, state.restarts) == ("ready", 5)
    assert state.last_error == "TransientError: connection refused"
    # A lost peer is a WARNING once, its recovery an INFO once.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "imap:sales" in warnings[0].getMessage()
    assert sum("recovered" in r.getMessage() for r in caplog.records) == 1
    await sup.shutdown(1)
    await runner
    assert sup.states()["imap:sales"].state == "stopped"


async def test_full_jitter_stays_within_the_ceiling() -> None:
    sup = Supervisor(jitter=lambda: 0.5, backoff_base_s=2.0, backoff_cap_s=300.0)
    assert [sup.backoff_delay(n) for n in (1, 2, 3, 10, 20)] == [1.0, 2.0, 4.0, 150.0, 150.0]


async def test_auth_error_stops_the_service_without_retrying() -> None:
    sleep = FakeSleep()
    sup = _supervisor(sleep)
    bad = Flaky("asterisk:hq", failures=99, error=AuthError("login refused for user rapport"))
    good = Flaky("web", failures=0, error=RuntimeError())
    sup.add(bad)
    sup.add(good)
    runner = asyncio.create_task(sup.run())
    await asyncio.wait_for(good.serving.wait(), 5)
    await asyncio.sleep(0.01)
    assert bad.runs == 1 and sleep.delays == []
    state = sup.states()["asterisk:hq"]
    assert state.state == "failed" and "login refused" in state.detail
    assert sup.states()["web"].state == "ready"  # one failed service does not stop the others
    await sup.shutdown(1)
    await runner


async def test_unexpected_exceptions_are_restarted_too() -> None:
    sleep = FakeSleep()
    sup = _supervisor(sleep)
    service = Flaky("tracking", failures=1, error=KeyError("bug"))
    sup.add(service)
    runner = asyncio.create_task(sup.run())
    await asyncio.wait_for(service.serving.wait(), 5)
    assert sup.states()["tracking"].restarts == 1
    await sup.shutdown(1)
    await runner


async def test_disabled_services_are_listed_with_their_reason() -> None:
    sup = Supervisor()
    sup.add_disabled("imap", "not configured: no [[imap.mailboxes]]")
    runner = asyncio.create_task(sup.run())
    await sup.shutdown(1)
    await runner
    state = sup.states()["imap"]
    assert (state.state, state.detail) == ("disabled", "not configured: no [[imap.mailboxes]]")


async def test_shutdown_stops_listeners_before_workers() -> None:
    order: list[str] = []

    class Recorder:
        def __init__(self, name: str, linger_s: float) -> None:
            self.name = name
            self.linger_s = linger_s
            self.up = asyncio.Event()

        async def run(self, status: ServiceStatus) -> None:
            status.ready()
            self.up.set()
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(self.linger_s)  # draining
                order.append(self.name)

    sup = Supervisor()
    worker, listener = Recorder("worker", 0.0), Recorder("listener", 0.05)
    sup.add(worker, STAGE_WORKERS)
    sup.add(listener, STAGE_LISTENERS)
    runner = asyncio.create_task(sup.run())
    await asyncio.wait_for(asyncio.gather(worker.up.wait(), listener.up.wait()), 5)
    await sup.shutdown(2)
    await runner
    # The listener drains for longer, yet the worker is only stopped after it.
    assert order == ["listener", "worker"]


async def test_a_service_that_ignores_cancellation_cannot_hold_shutdown_forever() -> None:
    class Stubborn:
        name = "stubborn"

        async def run(self, status: ServiceStatus) -> None:
            status.ready()
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.3)
                    return

    sup = Supervisor()
    sup.add(Stubborn())
    runner = asyncio.create_task(sup.run())
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await sup.shutdown(0.1)
    assert loop.time() - began < 0.3
    await runner
