"""Filing rules: conditions on the mail, actions on where it goes, first match wins."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.parse import ParsedMail
from store.models import Lead, LeadStatus, MailRule

log = logging.getLogger(__name__)


@dataclass
class RuleOutcome:
    """What the matching rules decided; None means "no rule said"."""

    matched: list[str] = field(default_factory=list)
    create_lead: bool | None = None
    skip: bool = False
    tags: list[str] = field(default_factory=list)
    owner_id: int | None = None
    team_id: int | None = None
    links: list[tuple[str, int]] = field(default_factory=list)
    server_actions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RuleBook:
    """The enabled rules in order, read once for a batch of mail.

    ``assigned`` counts the open leads this batch has given each user so far,
    which the store cannot count yet: least-busy assignment adds them.
    """

    rules: list[MailRule]
    assigned: Counter[int] = field(default_factory=Counter)


async def load_rules(session: AsyncSession) -> RuleBook:
    rules = await session.scalars(
        select(MailRule).where(MailRule.enabled.is_(True)).order_by(MailRule.position, MailRule.id)
    )
    return RuleBook(list(rules))


def _values(mail: ParsedMail, name: str) -> list[str]:
    if name == "from":
        return [a for _, a in ([(mail.from_name or "", mail.from_addr)] if mail.from_addr else [])]
    if name in ("to", "cc", "reply_to"):
        return [a for _, a in getattr(mail, name)]
    if name == "subject":
        return [mail.subject]
    if name == "body":
        return [mail.text]
    if name.startswith("header:"):
        return mail.headers.get(name[7:].strip().lower(), [])
    if name == "attachment":
        return [a.filename for a in mail.attachments]
    raise ValueError(f"unknown rule field {name!r}")


def condition_holds(mail: ParsedMail, condition: dict[str, Any]) -> bool:
    """One condition: ``field`` ``op`` ``value`` (case-insensitive except regex)."""
    values = _values(mail, str(condition.get("field", "")))
    op = condition.get("op", "contains")
    wanted = str(condition.get("value", ""))
    if op == "exists":
        return bool(values)
    lowered = [v.lower() for v in values]
    if op == "contains":
        return any(wanted.lower() in v for v in lowered)
    if op == "equals":
        return any(wanted.lower() == v.strip() for v in lowered)
    if op == "domain":
        domain = wanted.lower().lstrip("@")
        return any(v.rpartition("@")[2] == domain or v.endswith("." + domain) for v in lowered)
    if op == "regex":
        pattern = re.compile(wanted)
        return any(pattern.search(v) for v in values)
    raise ValueError(f"unknown rule operator {op!r}")


def rule_matches(mail: ParsedMail, rule: MailRule) -> bool:
    conditions = list(rule.conditions or [])
    if not conditions:
        return True
    results = (condition_holds(mail, c) for c in conditions)
    return any(results) if rule.match == "any" else all(results)


async def _least_busy(session: AsyncSession, user_ids: list[int], book: RuleBook) -> int:
    open_leads: dict[int | None, int] = {
        owner: count
        for owner, count in (
            await session.execute(
                select(Lead.owner_id, func.count())
                .where(
                    Lead.owner_id.in_(user_ids),
                    Lead.status.in_([LeadStatus.NEW, LeadStatus.CONTACTED]),
                    Lead.deleted_at.is_(None),
                )
                .group_by(Lead.owner_id)
            )
        )
    }
    return min(
        user_ids,
        key=lambda uid: (open_leads.get(uid, 0) + book.assigned[uid], user_ids.index(uid)),
    )


async def _assign(
    session: AsyncSession, rule: MailRule, action: dict[str, Any], book: RuleBook
) -> int | None:
    user_ids = [int(u) for u in action.get("user_ids", [])]
    if not user_ids:
        return None
    mode = action.get("mode", "fixed")
    if mode == "round_robin":
        chosen = user_ids[rule.round_robin_next % len(user_ids)]
        rule.round_robin_next = (rule.round_robin_next + 1) % len(user_ids)
        return chosen
    if mode == "least_busy":
        return await _least_busy(session, user_ids, book)
    return user_ids[0]


async def apply_rules(
    session: AsyncSession, mail: ParsedMail, mailbox: str, book: RuleBook | None = None
) -> RuleOutcome:
    """Evaluate the enabled rules in order; a broken rule is logged and passed over."""
    outcome = RuleOutcome()
    book = book if book is not None else await load_rules(session)
    for rule in book.rules:
        if rule.mailbox and rule.mailbox != mailbox:
            continue
        try:
            if not rule_matches(mail, rule):
                continue
        except (ValueError, re.error) as err:
            log.warning("mail rule %r is broken and was passed over: %s", rule.name, err)
            continue
        outcome.matched.append(rule.name)
        for action in rule.actions or []:
            kind = action.get("type")
            if kind == "create_lead":
                outcome.create_lead = True
            elif kind == "skip":
                outcome.skip = True
                outcome.create_lead = False
            elif kind == "tag" and action.get("tag"):
                outcome.tags.append(str(action["tag"]))
            elif kind == "assign":
                outcome.owner_id = await _assign(session, rule, action, book) or outcome.owner_id
            elif kind == "team" and action.get("team_id"):
                outcome.team_id = int(action["team_id"])
            elif kind == "link" and action.get("record_type") and action.get("record_id"):
                outcome.links.append((str(action["record_type"]), int(action["record_id"])))
            elif kind in ("flag", "move"):
                outcome.server_actions.append(dict(action))
        if not rule.continue_after:
            break
    return outcome
