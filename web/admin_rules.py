"""Admin: inbound mail's filing rules, edited as data (``store.models.MailRule``).

Conditions and actions are JSON lists in the shape the scanner evaluates
(``scanner/rules.py``; documented on ``MailRule``).  The scanner passes over a
rule it cannot evaluate; here such a rule is refused before it is kept, with
the item and the reason: an unknown field, operator or action, a regular
expression that does not compile, a user, team or record that does not exist.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import RECORD_TYPES, MailRule, Team, User
from web.admin_base import admin_viewer, editor, id_of, services_of, store_of
from web.i18n import Translator
from web.render import render

RULE_FIELDS = ("from", "to", "cc", "reply_to", "subject", "body", "attachment")
OPERATORS = ("contains", "equals", "regex", "domain", "exists")
ACTION_TYPES = ("create_lead", "skip", "tag", "assign", "team", "link", "flag", "move")
ASSIGN_MODES = ("fixed", "round_robin", "least_busy")
LINKABLE = ("lead", "contact", "account", "opportunity")
CONDITIONS_EXAMPLE = '[{"field": "from", "op": "domain", "value": "huaxin-tech.cn"}]'
ACTIONS_EXAMPLE = '[{"type": "tag", "tag": "VIP"}, {"type": "assign", "user_ids": [3]}]'


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _list_of_objects(raw: str, t: Translator, errors: dict[str, str], key: str) -> list[Any]:
    try:
        value = json.loads(raw or "[]")
    except ValueError as err:
        errors[key] = t.gettext("Not valid JSON: {error}", error=str(err))
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        example = CONDITIONS_EXAMPLE if key == "conditions" else ACTIONS_EXAMPLE
        errors[key] = t.gettext("A list of objects, e.g. {example}", example=example)
        return []
    return value


def check_conditions(conditions: list[dict[str, Any]], t: Translator) -> str | None:
    """The first problem of the conditions, or None."""
    for n, condition in enumerate(conditions, start=1):
        field = str(condition.get("field", ""))
        if field not in RULE_FIELDS and not (field.startswith("header:") and field[7:].strip()):
            return t.gettext(
                "Condition {n}: the field must be one of {choices}, or header:Name.",
                n=n,
                choices=", ".join(RULE_FIELDS),
            )
        op = condition.get("op", "contains")
        if op not in OPERATORS:
            return t.gettext(
                "Condition {n}: the operator must be one of {choices}.",
                n=n,
                choices=", ".join(OPERATORS),
            )
        value = condition.get("value")
        if op != "exists" and (not isinstance(value, str) or not value):
            return t.gettext("Condition {n}: a value is needed.", n=n)
        if op == "regex":
            try:
                re.compile(str(value))
            except re.error as err:
                return t.gettext(
                    "Condition {n}: the regular expression does not compile: {error}",
                    n=n,
                    error=str(err),
                )
    return None


def _ids(value: Any) -> list[int] | None:
    if isinstance(value, list) and value and all(isinstance(v, int) and v > 0 for v in value):
        return value
    return None


async def check_actions(
    session: AsyncSession, actions: list[dict[str, Any]], t: Translator
) -> str | None:
    """The first problem of the actions (their shape, and that what they name exists)."""
    for n, action in enumerate(actions, start=1):
        kind = action.get("type")
        if kind not in ACTION_TYPES:
            return t.gettext(
                "Action {n}: the type must be one of {choices}.",
                n=n,
                choices=", ".join(ACTION_TYPES),
            )
        needs = {"tag": "tag", "move": "folder"}.get(str(kind))
        if needs and (not isinstance(action.get(needs), str) or not action[needs].strip()):
            return t.gettext("Action {n}: {key} is needed.", n=n, key=needs)
        if kind == "assign":
            if action.get("mode", "fixed") not in ASSIGN_MODES:
                return t.gettext(
                    "Action {n}: the mode must be one of {choices}.",
                    n=n,
                    choices=", ".join(ASSIGN_MODES),
                )
            user_ids = _ids(action.get("user_ids"))
            if user_ids is None:
                return t.gettext("Action {n}: {key} is needed.", n=n, key="user_ids")
            found = set(
                (
                    await session.scalars(
                        select(User.id).where(User.id.in_(user_ids), User.is_active.is_(True))
                    )
                ).all()
            )
            if missing := [u for u in user_ids if u not in found]:
                return t.gettext("Action {n}: no active user {id}.", n=n, id=missing[0])
        if kind == "team":
            team_id = action.get("team_id")
            if not isinstance(team_id, int) or await session.get(Team, team_id) is None:
                return t.gettext("Action {n}: no team {id}.", n=n, id=team_id)
        if kind == "link":
            record_type, record_id = action.get("record_type"), action.get("record_id")
            if record_type not in LINKABLE:
                return t.gettext(
                    "Action {n}: record_type must be one of {choices}.",
                    n=n,
                    choices=", ".join(LINKABLE),
                )
            if (
                not isinstance(record_id, int)
                or not 0 < record_id < 2**63
                or (await session.get(RECORD_TYPES[str(record_type)], record_id) is None)
            ):
                return t.gettext("Action {n}: no {kind} {id}.", n=n, kind=record_type, id=record_id)
    return None


async def rules_list(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        rules = (
            await session.scalars(select(MailRule).order_by(MailRule.position, MailRule.id))
        ).all()
    return render(request, "admin/rules.html", {"rules": rules})


def _mailboxes(request: web.Request) -> list[str]:
    connections = services_of(request).connections
    configured = (
        [c.name for c in connections.connections() if c.kind == "imap"] if connections else []
    )
    return [*configured, "smtp", "import"]


def _form(
    request: web.Request,
    rule: MailRule | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "admin/rule_form.html",
        {
            "rule": rule,
            "values": values,
            "errors": errors,
            "mailboxes": _mailboxes(request),
            "fields": RULE_FIELDS,
            "operators": OPERATORS,
            "action_types": ACTION_TYPES,
            "assign_modes": ASSIGN_MODES,
            "conditions_example": CONDITIONS_EXAMPLE,
            "actions_example": ACTIONS_EXAMPLE,
        },
        status=status,
    )


async def new_rule_form(request: web.Request) -> web.Response:
    editor(request)
    async with store_of(request).session() as session:
        last = await session.scalar(select(MailRule.position).order_by(MailRule.position.desc()))
    values = {
        "name": "",
        "position": str((last or 0) + 10),
        "enabled": True,
        "mailbox": "",
        "match": "all",
        "continue_after": False,
        "conditions": "[]",
        "actions": "[]",
    }
    return _form(request, None, values, {})


async def rule_page(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        rule = await session.get(MailRule, id_of(request))
    if rule is None:
        raise web.HTTPNotFound()
    values = {
        "name": rule.name,
        "position": str(rule.position),
        "enabled": rule.enabled,
        "mailbox": rule.mailbox or "",
        "match": rule.match,
        "continue_after": rule.continue_after,
        "conditions": _dump(rule.conditions or []),
        "actions": _dump(rule.actions or []),
    }
    return _form(request, rule, values, {})


async def save_rule(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    form = await request.post()
    values: dict[str, Any] = {
        k: str(form.get(k, "")).strip()
        for k in ("name", "position", "mailbox", "match", "conditions", "actions")
    }
    values["enabled"] = bool(form.get("enabled"))
    values["continue_after"] = bool(form.get("continue_after"))
    errors: dict[str, str] = {}
    if not values["name"] or len(values["name"]) > 120:
        errors["name"] = t.gettext("Between 1 and {n} characters.", n=120)
    if not values["position"].isdigit() or int(values["position"]) > 1_000_000:
        errors["position"] = t.gettext("A whole number from 0.")
    if values["match"] not in ("all", "any"):
        errors["match"] = t.gettext("Choose one of the offered values.")
    if len(values["mailbox"]) > 255:
        errors["mailbox"] = t.gettext("At most {n} characters.", n=255)
    conditions = _list_of_objects(values["conditions"], t, errors, "conditions")
    actions = _list_of_objects(values["actions"], t, errors, "actions")
    if "conditions" not in errors and (problem := check_conditions(conditions, t)):
        errors["conditions"] = problem
    new = request.match_info.get("id") is None
    async with store_of(request).session() as session, session.begin():
        rule = None if new else await session.get(MailRule, id_of(request))
        if not new and rule is None:
            raise web.HTTPNotFound()
        if "actions" not in errors and (problem := await check_actions(session, actions, t)):
            errors["actions"] = problem
        if not errors:
            if rule is None:
                rule = MailRule(name=values["name"])
                session.add(rule)
            rule.name, rule.position = values["name"], int(values["position"])
            rule.enabled, rule.continue_after = values["enabled"], values["continue_after"]
            rule.mailbox = values["mailbox"] or None
            rule.match = values["match"]
            rule.conditions, rule.actions = conditions, actions
            await session.flush()
            rule_id = rule.id
    if errors:
        return _form(request, rule, values, errors, status=422)
    raise web.HTTPSeeOther(f"/admin/rules/{rule_id}?saved=1")


async def delete_rule(request: web.Request) -> web.Response:
    editor(request)
    async with store_of(request).session() as session, session.begin():
        rule = await session.get(MailRule, id_of(request))
        if rule is None:
            raise web.HTTPNotFound()
        await session.delete(rule)
    raise web.HTTPSeeOther("/admin/rules")


def add_rule_routes(app: web.Application) -> None:
    app.router.add_get("/admin/rules", rules_list)
    app.router.add_get("/admin/rules/new", new_rule_form)
    app.router.add_post("/admin/rules/new", save_rule)
    app.router.add_get(r"/admin/rules/{id}", rule_page)
    app.router.add_post(r"/admin/rules/{id}", save_rule)
    app.router.add_post(r"/admin/rules/{id}/delete", delete_rule)
