"""``GET /api/v1/openapi.json``: the API described, built from the same specs that validate it.

Record schemas come from ``web/modules.py`` (the fields the forms and the API
validate with), so the document cannot drift from what the API accepts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from web.api_records import ACTIVITY_KINDS, MAX_LIMIT
from web.modules import MODULES, Field, Module

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
PROBLEMS = {
    "type": "object",
    "properties": {"errors": {"type": "object", "additionalProperties": {"type": "string"}}},
    "required": ["errors"],
}


def _field(f: Field) -> dict[str, Any]:
    if f.kind == "ref":
        return {"type": ["integer", "null"], "description": f"id of a {f.ref} record"}
    schema: dict[str, Any] = {"type": ["string", "null"], "maxLength": f.max_length}
    if f.kind == "email":
        schema["format"] = "email"
    elif f.kind == "date":
        schema["format"] = "date"
    elif f.kind == "money":
        schema["pattern"] = r"^\d+(\.\d{1,2})?$"
        schema.pop("maxLength")
    elif f.kind == "choice":
        schema["enum"] = [*f.choices, None]
    return schema


def _record(module: Module) -> dict[str, Any]:
    stamp = {"type": "string", "format": "date-time"}
    props: dict[str, Any] = {"id": {"type": "integer"}}
    props.update({f.name: _field(f) for f in module.fields})
    for name in ("first_name", "last_name", "description"):
        if name in props:
            props[name]["type"] = "string"
    if module.key == "leads":
        props["converted_at"] = {"type": ["string", "null"], "format": "date-time"}
    if module.key == "opportunities":
        props["stage_id"] = {"type": "integer"}
        props["probability"] = {"type": "integer", "minimum": 0, "maximum": 100}
    props.update(
        owner_id={"type": ["integer", "null"]},
        team_id={"type": ["integer", "null"]},
        created_at=stamp,
        updated_at=stamp,
    )
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def _input(module: Module, creating: bool) -> dict[str, Any]:
    props = {}
    for f in module.fields:
        schema = _field(f)
        if f.kind == "money":
            schema = {"type": ["string", "number", "null"]}
        props[f.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if creating:
        out["required"] = [f.name for f in module.fields if f.required]
    return out


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}


REFUSALS = {
    "401": _json("Error", "no valid token"),
    "403": _json("Error", "the token's role may not do this"),
}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR, "Problems": PROBLEMS}
    paths: dict[str, Any] = {}
    record_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    cursor = {
        "name": "cursor",
        "in": "query",
        "schema": {"type": "string"},
        "description": "the `next` of the previous page",
    }
    activity = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string"},
            "subject": {"type": "string"},
            "body": {"type": "string"},
            "status": {"type": "string"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "due_at": {"type": ["string", "null"], "format": "date-time"},
            "owner_id": {"type": ["integer", "null"]},
            "email_id": {"type": ["integer", "null"]},
            "call_id": {"type": ["integer", "null"]},
        },
        "required": ["id", "kind", "subject", "status", "occurred_at"],
    }
    schemas["Activity"] = activity
    for module in MODULES.values():
        name = module.singular
        schemas[name] = _record(module)
        schemas[f"{name}Create"] = _input(module, creating=True)
        schemas[f"{name}Update"] = _input(module, creating=False)
        filters = [{"name": f, "in": "query", "schema": {"type": "string"}} for f in module.filters]
        sorts = [*module.sorts, *(f"-{s}" for s in module.sorts)]
        paths[f"/api/v1/{module.key}"] = {
            "get": {
                "summary": f"{module.title} in the token user's scope",
                "operationId": f"list_{module.key}",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "an email address, a phone number, or the start of a name",
                    },
                    {"name": "sort", "in": "query", "schema": {"enum": sorts}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    },
                    cursor,
                    *filters,
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["items", "next"],
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "items": {"$ref": f"#/components/schemas/{name}"},
                                },
                                "next": {"type": ["string", "null"]},
                            },
                        },
                        "a page",
                    ),
                    "422": _json("Problems", "a bad parameter"),
                    **REFUSALS,
                },
            },
            "post": {
                "summary": f"Create a {name.lower()} owned by the token user",
                "operationId": f"create_{module.record_type}",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{name}Create"}
                        }
                    },
                },
                "responses": {
                    "201": _json(name, "created"),
                    "422": _json("Problems", "every problem of the body"),
                    **REFUSALS,
                },
            },
        }
        paths[f"/api/v1/{module.key}/{{id}}"] = {
            "parameters": [record_id],
            "get": {
                "operationId": f"get_{module.record_type}",
                "responses": {
                    "200": _json(name, "the record"),
                    "404": _json("Error", "no such record in scope"),
                    **REFUSALS,
                },
            },
            "patch": {
                "operationId": f"update_{module.record_type}",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{name}Update"}
                        }
                    },
                },
                "responses": {
                    "200": _json(name, "the record as changed"),
                    "404": _json("Error", "no such record in scope"),
                    "422": _json("Problems", "every problem"),
                    **REFUSALS,
                },
            },
            "delete": {
                "operationId": f"delete_{module.record_type}",
                "responses": {
                    "204": {"description": "moved to the recycle bin"},
                    "404": _json("Error", "no such record in scope"),
                    **REFUSALS,
                },
            },
        }
        paths[f"/api/v1/{module.key}/{{id}}/activities"] = {
            "parameters": [record_id],
            "get": {
                "operationId": f"timeline_{module.record_type}",
                "parameters": [cursor],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["items", "next"],
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Activity"},
                                },
                                "next": {"type": ["string", "null"]},
                            },
                        },
                        "the record's timeline, newest first",
                    ),
                    "404": _json("Error", "no such record in scope"),
                    "422": _json("Problems", "a bad cursor"),
                    **REFUSALS,
                },
            },
        }
    paths["/api/v1/activities"] = {
        "post": {
            "operationId": "create_activity",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["kind", "subject", "records"],
                            "properties": {
                                "kind": {"enum": list(ACTIVITY_KINDS)},
                                "subject": {"type": "string", "minLength": 1, "maxLength": 500},
                                "body": {"type": "string"},
                                "due_at": {"type": "string", "format": "date-time"},
                                "records": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "string", "pattern": r"^[a-z]+:\d+$"},
                                },
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _json("Activity", "logged"),
                "422": _json("Problems", "every problem"),
                **REFUSALS,
            },
        }
    }
    paths["/api/v1/leads/{id}/convert"] = {
        "parameters": [record_id],
        "post": {
            "operationId": "convert_lead",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "account_id": {"type": ["integer", "null"]},
                                "create_opportunity": {"type": "boolean"},
                                "opportunity_name": {"type": ["string", "null"]},
                                "amount": {"type": ["string", "number", "null"]},
                            },
                        }
                    }
                }
            },
            "responses": {
                "201": _json(
                    {
                        "type": "object",
                        "required": ["account_id", "contact_id"],
                        "properties": {
                            "account_id": {"type": "integer"},
                            "contact_id": {"type": "integer"},
                            "opportunity_id": {"type": ["integer", "null"]},
                        },
                    },
                    "converted",
                ),
                "404": _json("Error", "no such lead in scope"),
                "422": _json("Problems", "refused, with why"),
                **REFUSALS,
            },
        },
    }
    paths["/api/v1/opportunities/{id}/stage"] = {
        "parameters": [record_id],
        "post": {
            "operationId": "move_opportunity",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["stage_id"],
                            "properties": {
                                "stage_id": {"type": "integer"},
                                "values": {
                                    "type": "object",
                                    "additionalProperties": {"type": ["string", "number"]},
                                },
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json("Opportunity", "moved"),
                "404": _json("Error", "no such deal or stage"),
                "422": _json("Problems", "the fields the stage needs"),
                **REFUSALS,
            },
        },
    }
    paths["/api/v1/calls"] = {
        "post": {
            "operationId": "dial",
            "summary": "Click-to-dial: the token user's phone rings first",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["number"],
                            "properties": {
                                "number": {"type": "string"},
                                "record": {"type": "string", "pattern": r"^[a-z]+:\d+$"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["request", "state"],
                        "properties": {
                            "request": {"type": "string"},
                            "state": {"const": "dialling"},
                        },
                    },
                    "asked",
                ),
                "422": _json("Problems", "no number"),
                **REFUSALS,
            },
        }
    }
    paths["/api/v1/mail"] = {
        "post": {
            "operationId": "send_mail",
            "summary": "Queue a mail through the shared outbox",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["email_id", "state"],
                        "properties": {
                            "email_id": {"type": "integer"},
                            "state": {"const": "queued"},
                        },
                    },
                    "queued",
                ),
                "422": _json("Problems", "every problem"),
                "503": _json("Error", "no outbox configured"),
                **REFUSALS,
            },
        }
    }
    paths["/api/v1/mail/preview"] = {
        "post": {
            "operationId": "preview_mail",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": _json({"type": "object"}, "the rendered mail"),
                "422": _json("Problems", "the template's error"),
                "503": _json("Error", "no outbox configured"),
                **REFUSALS,
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rapport API",
            "version": "1",
            "description": "Every call acts as the user whose token it carries, with their "
            "role's permissions and record scope.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "rapport token create --user NAME",
                }
            },
        },
        "paths": paths,
    }


async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(document())


def add_openapi_route(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi_json)
