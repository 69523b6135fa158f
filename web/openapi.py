"""``GET /api/v1/openapi.json``: the API described, from the operations and models it runs on.

Paths, parameters and answers come from the ``Operation`` declarations the
routes are registered from, and every schema from the pydantic models that
validate the requests (``model_json_schema``), so the document cannot drift
from what the API does.  Served without a token.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from web.api import preview_mail, send_mail
from web.api_models import Error, MailPreview, MailQueued, MailRendered, MailSend
from web.api_records import OPERATIONS
from web.api_spec import Operation, refusals
from web.api_webforms import FORM_KEY_HEADER, LEAD_FORM_OPERATION

REF = "#/components/schemas/{model}"


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document (https://spec.openapis.org/oas/v3.1.0)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(document())


MAIL_OPERATIONS = [
    Operation("POST", "/api/v1/mail", send_mail, "send_mail",
              "Queue a mail through the shared outbox", "Mail",
              {202: (MailQueued, "queued"), **refusals(401, 413, 422),
               503: (Error, "no outbox: [smtp_relay] from_address is not set")},
              body=MailSend,
              description="Validated by the outbox; unknown fields are ignored."),
    Operation("POST", "/api/v1/mail/preview", preview_mail, "preview_mail",
              "Render a mail template without queueing anything", "Mail",
              {200: (MailRendered, "the template rendered"), **refusals(401, 413, 422),
               503: (Error, "no outbox: [smtp_relay] from_address is not set")},
              body=MailPreview),
]  # fmt: skip
OPENAPI_OPERATION = Operation(
    "GET", "/api/v1/openapi.json", openapi_json, "openapi", "This document", "API",
    {200: (OpenApiDocument, "the OpenAPI 3.1 document")}, public=True,
)  # fmt: skip
DOCUMENTED = [*OPERATIONS, *MAIL_OPERATIONS, OPENAPI_OPERATION, LEAD_FORM_OPERATION]


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is left out, never null: its schema without the null branch."""
    branches = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
    if "anyOf" not in schema:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if len(branches) == 1:
        return {**rest, **branches[0]}
    return {**rest, "anyOf": branches}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if "{id}" in op.path:
        found.append({"name": "id", "in": "path", "required": True,
                      "schema": {"type": "integer", "minimum": 1}})  # fmt: skip
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            prop = _without_null({k: v for k, v in prop.items() if k != "title"})
            said = prop.pop("description", None)
            parameter = {"name": name, "in": "query", "required": name in required,
                         "schema": prop}  # fmt: skip
            if said:
                parameter["description"] = said
            found.append(parameter)
    return found


@functools.cache
def document() -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in DOCUMENTED:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted += [(model, "serialization") for model, _ in op.answers.values() if model]
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    paths: dict[str, Any] = {}
    for op in DOCUMENTED:
        entry: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary,
                                 "tags": [op.tag], "responses": {}}  # fmt: skip
        if op.description:
            entry["description"] = op.description
        if op.public:
            entry["security"] = []
        elif op.security is not None:
            entry["security"] = [{op.security: []}]
        parameters = _parameters(op)
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            schema = refs[(op.body, "validation")]
            entry["requestBody"] = {
                "required": True,
                "content": {kind: {"schema": schema} for kind in op.body_types},
            }
        for status, (model, said) in sorted(op.answers.items()):
            answer: dict[str, Any] = {"description": said}
            if status in op.headers:
                answer["headers"] = {
                    name: {"description": what, "schema": {"type": "string"}}
                    for name, what in op.headers[status].items()
                }
            if model is not None:
                schema = refs[(model, "serialization")]
                answer["content"] = {"application/json": {"schema": schema}}
            entry["responses"][str(status)] = answer
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rapport API",
            "version": "1",
            "description": "Every call acts as the user whose token it carries "
            "(`rapport token create --user NAME`), with their role's permissions and record "
            "scope: a record outside the scope answers 404, as one that does not exist. "
            "`POST /forms/lead` is not called with a token: a company site's form posts it "
            "with its form key (`rapport webform create`, or the admin page /admin/webforms).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "formKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": FORM_KEY_HEADER,
                    "description": "A web form's key; a browser's form may send it as the "
                    "hidden field `_form_key` instead. It files leads through its form only.",
                },
            },
        },
    }


def add_openapi_route(app: web.Application) -> None:
    app.router.add_route(
        OPENAPI_OPERATION.method, OPENAPI_OPERATION.route, openapi_json, name="openapi"
    )
