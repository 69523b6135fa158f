"""Rendering pages: every template sees the viewer, their words and formats, the CSRF token.

(aiohttp_jinja2's own context processors keep their state under a plain
string request key, which aiohttp now warns about; this does the same with
none.)
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from web.auth import VIEWER

Handler = Callable[[web.Request], Awaitable[Mapping[str, Any]]]


def page_context(request: web.Request) -> dict[str, Any]:
    viewer = request.get(VIEWER)
    if viewer is None:
        return {"request": request}
    return {"request": request, "viewer": viewer, "t": viewer.t, "_": viewer.t.gettext,
            "csrf": viewer.csrf, "access": viewer.access}  # fmt: skip


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    return aiohttp_jinja2.render_template(
        template, request, {**page_context(request), **context}, status=status
    )


def page(template: str) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.Response]]]:
    """A handler that returns its template's context, rendered with the page context."""

    def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.Response:
            return render(request, template, await handler(request))

        return run

    return wrap
