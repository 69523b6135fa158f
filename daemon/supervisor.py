"""The supervisor: runs every service in one TaskGroup, restarts, reports, stops in stages.

A service that fails with a ``TransientError`` or an unexpected exception is
restarted after an exponential backoff with full jitter; the first failure of a
streak is a WARNING, the rest DEBUG, and the recovery one INFO.  ``AuthError``
and ``ConfigError`` stop that service for good (state ``failed``): they need a
human, and retrying would only hammer the peer.  Shutdown cancels services
stage by stage (listeners first, so nothing new comes in while workers drain).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from store.errors import AuthError, ConfigError, TransientError
from store.service import Service

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "degraded", "backoff", "stopped", "failed", "disabled"]
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
# A service that stayed up this long starts its next failure streak from the base delay.
STABLE_AFTER_S = 60.0
STAGE_LISTENERS = 0
STAGE_WORKERS = 1
STAGE_LAST = 2


@dataclass(frozen=True)
class ServiceState:
    name: str
    state: State
    detail: str = ""
    restarts: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.time)


class _Entry:
    def __init__(self, service: Service | None, name: str, stage: int, state: ServiceState) -> None:
        self.service = service
        self.name = name
        self.stage = stage
        self.state = state
        self.task: asyncio.Task[None] | None = None
        self.streak = 0
        self.ready_at: float | None = None


class _Status:
    """What one service reports about itself, turned into its ``ServiceState``."""

    def __init__(self, supervisor: Supervisor, entry: _Entry) -> None:
        self._supervisor = supervisor
        self._entry = entry

    def ready(self, detail: str = "") -> None:
        entry = self._entry
        if entry.streak:
            log.info("service %s recovered: %s", entry.name, detail or "ready")
        elif entry.state.state != "ready":
            log.info("service %s ready%s", entry.name, f": {detail}" if detail else "")
        entry.ready_at = self._supervisor.clock()
        entry.streak = 0
        self._supervisor._set(entry, "ready", detail)

    def progress(self, detail: str) -> None:
        self._supervisor._set(self._entry, self._entry.state.state, detail)

    def degraded(self, detail: str) -> None:
        if self._entry.state.state != "degraded":
            log.warning("service %s degraded: %s", self._entry.name, detail)
        self._supervisor._set(self._entry, "degraded", detail)


class Supervisor:
    """Runs services until shut down; ``states()`` is what /healthz shows."""

    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
    ) -> None:
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._entries: dict[str, _Entry] = {}
        self._started = asyncio.Event()
        self.on_change: Callable[[ServiceState], None] | None = None

    def add(self, service: Service, stage: int = STAGE_WORKERS) -> None:
        if service.name in self._entries:
            raise ValueError(f"two services named {service.name!r}")
        self._entries[service.name] = _Entry(
            service, service.name, stage, ServiceState(service.name, "starting")
        )

    def add_disabled(self, name: str, reason: str) -> None:
        log.info("service %s disabled: %s", name, reason)
        self._entries[name] = _Entry(None, name, STAGE_LAST, ServiceState(name, "disabled", reason))

    def states(self) -> dict[str, ServiceState]:
        return {name: entry.state for name, entry in self._entries.items()}

    def _set(self, entry: _Entry, state: State, detail: str, **changes: object) -> None:
        entry.state = replace(entry.state, state=state, detail=detail, since=time.time(), **changes)  # type: ignore[arg-type]
        if self.on_change is not None:
            self.on_change(entry.state)

    def backoff_delay(self, streak: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(streak-1))]."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, streak - 1))
        return float(self.jitter() * ceiling)

    async def _supervise(self, entry: _Entry) -> None:
        assert entry.service is not None
        status = _Status(self, entry)
        while True:
            self._set(entry, "starting" if not entry.streak else "backoff", entry.state.detail)
            try:
                await entry.service.run(status)
            except (AuthError, ConfigError) as err:
                log.error("service %s stopped, it needs a human: %s", entry.name, err)
                self._set(entry, "failed", str(err), last_error=f"{type(err).__name__}: {err}")
                return
            except Exception as err:
                self._failed(entry, err)
            else:
                log.info("service %s finished", entry.name)
                self._set(entry, "stopped", "finished")
                return
            delay = self.backoff_delay(entry.streak)
            self._set(entry, "backoff", f"restarting in {delay:.1f}s")
            await self.sleep(delay)

    def _failed(self, entry: _Entry, err: Exception) -> None:
        now = self.clock()
        if entry.ready_at is not None and now - entry.ready_at >= STABLE_AFTER_S:
            entry.streak = 0
        entry.ready_at = None
        entry.streak += 1
        message = f"{type(err).__name__}: {err}"
        if entry.streak == 1:
            log.warning(
                "service %s failed, will retry: %s",
                entry.name,
                message,
                exc_info=not _expected(err),
            )
        else:
            log.debug(
                "service %s failed again (%d in a row): %s", entry.name, entry.streak, message
            )
        self._set(entry, "backoff", message, restarts=entry.state.restarts + 1, last_error=message)

    async def run(self) -> None:
        """Run every service until ``shutdown`` cancels them; returns when all have stopped."""
        async with asyncio.TaskGroup() as group:
            for entry in self._entries.values():
                if entry.service is not None:
                    entry.task = group.create_task(
                        self._supervise(entry), name=f"service:{entry.name}"
                    )
            self._started.set()

    async def shutdown(self, timeout_s: float = 4.0) -> None:
        """Stop services stage by stage, giving the whole shutdown ``timeout_s``."""
        await self._started.wait()
        deadline = self.clock() + timeout_s
        for stage in sorted({e.stage for e in self._entries.values()}):
            tasks = [
                e.task
                for e in self._entries.values()
                if e.stage == stage and e.task and not e.task.done()
            ]
            for task in tasks:
                task.cancel()
            if tasks:
                _done, pending = await asyncio.wait(
                    tasks, timeout=max(0.1, deadline - self.clock())
                )
                for task in pending:
                    log.warning("service %s did not stop in time", task.get_name())
        for entry in self._entries.values():
            if entry.state.state not in ("disabled", "failed"):
                self._set(entry, "stopped", "shut down")


def _expected(err: Exception) -> bool:
    """Failures of the outside world need no traceback; bugs do."""
    return isinstance(err, TransientError | OSError | TimeoutError)
