"""One line per event with the correlation id; /healthz and /metrics over HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.http import add_health_routes, health
from daemon.logs import redact, setup_logging
from daemon.metrics import Metrics
from daemon.supervisor import Supervisor
from store.context import correlated
from store.errors import AuthError
from store.service import ServiceStatus


def test_log_lines_carry_the_correlation_id_and_redact() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    try:
        with correlated("msg-42"):
            logging.getLogger("scanner.imap").warning(
                "from %s at %s", "zhang.wei@example.cn", "+8613812345678"
            )
        logging.getLogger("x").error("two\nlines")
    finally:
        setup_logging("WARNING")
    first, second = stream.getvalue().splitlines()[:2]
    assert " WARNING scanner.imap [cid=msg-42] from z***@example.cn at " in first
    assert "13812345678" not in first and first.endswith("78")
    assert "[cid=-] two" in second


def test_json_lines() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", json_lines=True, stream=stream)
    try:
        logging.getLogger("daemon").info("hello %s", "a@b.cn")
    finally:
        setup_logging("WARNING")
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["msg"] == "hello a@b.cn" and record["level"] == "INFO"  # DEBUG does not redact


def test_redact() -> None:
    assert redact("call 010-62345678 now") == "call **********78 now"
    assert redact("ext 8001") == "ext 8001"  # short numbers are not personal


async def test_healthz_and_metrics_over_http() -> None:
    sup = Supervisor(sleep=lambda _s: asyncio.sleep(0))

    class Up:
        name = "web"

        async def run(self, status: ServiceStatus) -> None:
            status.ready()
            await asyncio.Event().wait()

    class Locked:
        name = "asterisk:hq"

        async def run(self, status: ServiceStatus) -> None:
            raise AuthError("bad secret")

    sup.add(Up())
    sup.add_disabled("imap", "not configured")
    app = web.Application()
    add_health_routes(app, sup, Metrics(sup.states))
    runner = asyncio.create_task(sup.run())
    async with TestClient(TestServer(app)) as client:
        await asyncio.sleep(0.01)
        resp = await client.get("/healthz")
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "ok"
        assert body["services"]["imap"]["state"] == "disabled"
        assert body["services"]["web"]["state"] == "ready"
        metrics = await (await client.get("/metrics")).text()
        assert 'rapport_service_up{service="web"} 1.0' in metrics
        assert 'rapport_service_up{service="imap"} 0.0' in metrics
    await sup.shutdown(1)
    await runner

    failing = Supervisor()
    failing.add(Locked())
    task = asyncio.create_task(failing.run())
    await asyncio.sleep(0.01)
    code, doc = health(failing)
    assert code == 503 and doc["status"] == "failing"
    await failing.shutdown(1)
    await task
