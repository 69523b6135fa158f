"""/healthz and /metrics, added to the web UI's application by the daemon."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from daemon.metrics import Metrics
from daemon.supervisor import Supervisor

SUPERVISOR_KEY = web.AppKey("supervisor", Supervisor)
METRICS_KEY = web.AppKey("metrics", Metrics)


def health(supervisor: Supervisor) -> tuple[int, dict[str, object]]:
    """The health document and its HTTP status: 503 only when a service failed for good."""
    states = supervisor.states()
    if any(s.state == "failed" for s in states.values()):
        overall, code = "failing", 503
    elif any(s.state in ("backoff", "degraded", "starting") for s in states.values()):
        overall, code = "degraded", 200
    else:
        overall, code = "ok", 200
    services = {
        name: {k: v for k, v in asdict(s).items() if k != "name"} for name, s in states.items()
    }
    return code, {"status": overall, "services": services}


async def healthz(request: web.Request) -> web.Response:
    code, body = health(request.app[SUPERVISOR_KEY])
    return web.json_response(body, status=code, headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": request.app[METRICS_KEY].content_type})


def add_health_routes(app: web.Application, supervisor: Supervisor, metrics_: Metrics) -> None:
    app[SUPERVISOR_KEY] = supervisor
    app[METRICS_KEY] = metrics_
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
