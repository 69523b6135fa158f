"""The JSON API under ``/api/v1``: token-authenticated, JSON in and out.

An integration sends ``Authorization: Bearer <token>`` (``rapport token
create --user NAME``); the call then acts as that user.  Errors are JSON too:
401 without a valid token, 422 with every problem of a bad body as
``{"errors": {field: message}}``, 503 when the part behind it is not set up.

Mail goes through the shared outbox: ``POST /api/v1/mail`` queues one (words,
or a template with the records to merge; documents to attach) and answers
202 with its id; ``POST /api/v1/mail/preview`` renders a template without
queueing anything.  The daemon hands the outbox in (``MailApi``), so this
package does not import the mail-out package.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from store.api_tokens import user_for_token
from store.db import Store
from store.errors import ValidationError
from web.api_models import MailPreview, MailSend, problems_of


class MailApi(Protocol):
    async def send(self, user_id: int, body: Mapping[str, Any]) -> int: ...

    async def preview(self, user_id: int, body: Mapping[str, Any]) -> dict[str, str | None]: ...


API_STORE_KEY = web.AppKey("api_store", Store)
MAIL_KEY = web.AppKey("api_mail", MailApi)
USER_KEY = web.RequestKey("api_user_id", int)
MAX_BODY_BYTES = 1024 * 1024


def _error(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def bearer_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every ``/api/v1`` call acts as the user whose live token it carries."""
    if not request.path.startswith("/api/v1/") or request.path == "/api/v1/openapi.json":
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, error="send Authorization: Bearer <token>")
    async with request.app[API_STORE_KEY].session() as session, session.begin():
        user = await user_for_token(session, token.strip())
    if user is None:
        return _error(401, error="unknown or revoked token")
    request[USER_KEY] = user.id
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        # The API answers in JSON, its refusals too.
        reason = err.text if err.content_type == "application/json" else None
        if reason is not None:
            return web.Response(status=err.status, text=reason, content_type="application/json")
        return _error(err.status, error=err.reason.lower())


async def _json(request: web.Request) -> Mapping[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ValidationError({"body": "larger than 1 MB"})
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as err:
        raise ValidationError({"body": f"not JSON: {err}"}) from err
    if not isinstance(body, dict):
        raise ValidationError({"body": "a JSON object"})
    return body


async def _with_mail(
    request: web.Request,
    shape: type[BaseModel],
    call: Callable[[MailApi, int, Mapping[str, Any]], Awaitable[Any]],
) -> Any:
    """Run one mail call for the token's user; the error responses the two share.

    ``shape`` checks the JSON types the OpenAPI document promises; the outbox
    checks the rest (addresses, records, templates).
    """
    try:
        body = await _json(request)
        shape.model_validate(body)
    except ValidationError as err:
        return _error(422, errors=err.errors)
    except PydanticError as err:
        named: dict[str, str] = {}
        for where, message in problems_of(err).items():  # the outbox names top-level fields
            named.setdefault(where.split(".")[0], message)
        return _error(422, errors=named)
    mail = request.app.get(MAIL_KEY)
    if mail is None:
        return _error(503, error="no outbox: set [smtp_relay] from_address")
    try:
        return await call(mail, request[USER_KEY], body)
    except ValidationError as err:
        return _error(422, errors=err.errors)


async def send_mail(request: web.Request) -> web.Response:
    result = await _with_mail(request, MailSend, lambda mail, user, body: mail.send(user, body))
    if isinstance(result, web.Response):
        return result
    return web.json_response({"email_id": result, "state": "queued"}, status=202)


async def preview_mail(request: web.Request) -> web.Response:
    result = await _with_mail(
        request, MailPreview, lambda mail, user, body: mail.preview(user, body)
    )
    return result if isinstance(result, web.Response) else web.json_response(result)


def add_api_routes(app: web.Application, store: Store, mail: MailApi | None) -> None:
    app[API_STORE_KEY] = store
    if mail is not None:
        app[MAIL_KEY] = mail
    app.router.add_post("/api/v1/mail", send_mail)
    app.router.add_post("/api/v1/mail/preview", preview_mail)
