"""The activity form: its fields, what a submitted one means, and a message for each bad field.

Times are typed in the viewer's own time zone (``datetime-local`` inputs) and
kept in UTC.  A form that does not validate comes back with everything typed
as it was, so the values stay strings here until they are all good.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from store.models import Activity, ActivityKind, ActivityStatus
from store.recurrence import FREQUENCIES, MAX_COUNT, MAX_INTERVAL, Rule, rule_of
from web.i18n import Translator
from web.modules import db_int

# What the activity pages make and change; mail, notes and stage changes come from elsewhere.
KINDS = (ActivityKind.TASK.value, ActivityKind.MEETING.value, ActivityKind.CALL.value,
         ActivityKind.VISIT.value)  # fmt: skip
STATUSES = tuple(s.value for s in ActivityStatus)
PRIORITIES = ("low", "normal", "high")
# Minutes before the activity's time that a reminder may be set to.
REMIND_CHOICES = (0, 5, 10, 15, 30, 60, 120, 1440)
REPEAT_ENDS = ("never", "count", "until")
LOCAL_FORMAT = "%Y-%m-%dT%H:%M"
SUBJECT_MAX = 500
BODY_MAX = 20000
LOCATION_MAX = 255


@dataclass
class Parsed:
    """A valid form, as the activity's columns (times in UTC)."""

    kind: ActivityKind
    subject: str
    body: str
    status: ActivityStatus
    occurred_at: dt.datetime
    ends_at: dt.datetime | None
    due_at: dt.datetime | None
    priority: str
    location: str | None
    owner_id: int
    remind_minutes: int | None
    rule: Rule | None


def local_input(t: Translator, value: dt.datetime | None) -> str:
    """A UTC time as a ``datetime-local`` input shows it to the viewer."""
    return t.local(value).strftime(LOCAL_FORMAT) if value is not None else ""


def from_local(t: Translator, text: str) -> dt.datetime:
    """A ``datetime-local`` value (the viewer's wall clock) in UTC; ValueError if it is none."""
    naive = dt.datetime.fromisoformat(text.strip().replace(" ", "T"))
    if naive.tzinfo is not None:
        raise ValueError(text)
    return naive.replace(tzinfo=t.zone).astimezone(dt.UTC)


def blank_values(kind: str, owner_id: int) -> dict[str, str]:
    """A new activity's form: a call is logged as done now, the rest are planned."""
    return {
        "kind": kind, "subject": "", "body": "", "priority": "normal", "location": "",
        "status": "done" if kind == "call" else "planned", "start": "", "end": "", "due": "",
        "owner_id": str(owner_id), "remind": "", "repeat": "", "interval": "1",
        "repeat_end": "never", "repeat_count": "", "repeat_until": "",
    }  # fmt: skip


def activity_values(t: Translator, activity: Activity) -> dict[str, str]:
    """An activity as its edit form shows it."""
    rule = rule_of(activity)
    ends = "count" if rule and rule.count else "until" if rule and rule.until else "never"
    return {
        "kind": activity.kind.value, "subject": activity.subject, "body": activity.body,
        "status": activity.status.value, "priority": activity.priority,
        "location": activity.location or "", "start": local_input(t, activity.occurred_at),
        "end": local_input(t, activity.ends_at), "due": local_input(t, activity.due_at),
        "owner_id": str(activity.owner_id or ""),
        "remind": "" if activity.remind_minutes is None else str(activity.remind_minutes),
        "repeat": rule.freq if rule else "", "interval": str(rule.interval if rule else 1),
        "repeat_end": ends, "repeat_count": str(rule.count) if rule and rule.count else "",
        "repeat_until": rule.until.isoformat() if rule and rule.until else "",
    }  # fmt: skip


def form_values(form: Mapping[str, Any]) -> dict[str, str]:
    """The submitted fields as typed (trimmed), for the form to show again."""
    names = blank_values("task", 0)
    return {name: str(form.get(name, "") or "").strip() for name in names}


def parse(
    values: Mapping[str, str], t: Translator, owners: set[int], *, now: dt.datetime,
    was: Activity | None = None,
) -> tuple[Parsed | None, dict[str, str]]:  # fmt: skip
    """The activity a form describes, or a message for every field that is wrong."""
    _ = t.gettext
    errors: dict[str, str] = {}
    kind = values["kind"]
    if kind not in KINDS:
        errors["kind"] = _("Choose one of the offered values.")
    subject = values["subject"]
    if not subject:
        errors["subject"] = _("This field is required.")
    elif len(subject) > SUBJECT_MAX:
        errors["subject"] = _("At most {n} characters.", n=SUBJECT_MAX)
    if len(values["body"]) > BODY_MAX:
        errors["body"] = _("At most {n} characters.", n=BODY_MAX)
    if len(values["location"]) > LOCATION_MAX:
        errors["location"] = _("At most {n} characters.", n=LOCATION_MAX)
    for name, choices in (("status", STATUSES), ("priority", PRIORITIES)):
        if values[name] not in choices:
            errors[name] = _("Choose one of the offered values.")
    times: dict[str, dt.datetime | None] = {}
    for name in ("start", "end", "due"):
        times[name] = None
        if values[name]:
            try:
                times[name] = from_local(t, values[name])
            except ValueError:
                errors[name] = _("A date and time like 2026-12-31 09:30.")
    start, end, due = times["start"], times["end"], times["due"]
    if start is None and "start" not in errors and kind in ("meeting", "visit"):
        errors["start"] = _("This field is required.")
    if end is not None and start is not None and end < start:
        errors["end"] = _("It cannot end before it starts.")
    # The time a reminder and a repetition count from: a task's due time, else the start.
    anchor = due if kind == "task" else start
    owner_id = db_int(values["owner_id"])
    if owner_id is None or owner_id not in owners:
        errors["owner_id"] = _("Choose a user.")
    remind = None
    if values["remind"]:
        remind = db_int(values["remind"])
        if remind not in REMIND_CHOICES:
            errors["remind"] = _("Choose one of the offered values.")
        elif anchor is None and not {"start", "due"} & set(errors):
            errors["remind"] = _("A reminder needs a due time.") if kind == "task" else _(
                "A reminder needs a start time."
            )
    timed = anchor is not None or bool({"start", "due"} & set(errors))
    rule = _rule(values, errors, t, timed=timed)
    if rule is not None and rule.until is not None and anchor is not None:
        if rule.until < t.local(anchor).date():
            errors["repeat_until"] = _("The last day is before the first occurrence.")
    if errors:
        return None, errors
    occurred_at = start or due or (was.occurred_at if was is not None else now)
    assert owner_id is not None
    return Parsed(
        kind=ActivityKind(kind), subject=subject, body=values["body"],
        status=ActivityStatus(values["status"]), occurred_at=occurred_at, ends_at=end,
        due_at=due if kind == "task" else None, priority=values["priority"],
        location=values["location"] or None, owner_id=owner_id, remind_minutes=remind,
        rule=rule,
    ), {}  # fmt: skip


def _rule(
    values: Mapping[str, str], errors: dict[str, str], t: Translator, *, timed: bool
) -> Rule | None:
    _ = t.gettext
    freq = values["repeat"]
    if not freq:
        return None
    if freq not in FREQUENCIES:
        errors["repeat"] = _("Choose one of the offered values.")
        return None
    if not timed:
        errors["repeat"] = _("A repeating activity needs a time.")
    interval = db_int(values["interval"])
    if interval is None or not 1 <= interval <= MAX_INTERVAL:
        errors["interval"] = _("A whole number from 1 to {n}.", n=MAX_INTERVAL)
    count, until = None, None
    end = values["repeat_end"]
    if end == "count":
        count = db_int(values["repeat_count"])
        if count is None or not 1 <= count <= MAX_COUNT:
            errors["repeat_count"] = _("A whole number from 1 to {n}.", n=MAX_COUNT)
    elif end == "until":
        try:
            until = dt.date.fromisoformat(values["repeat_until"])
        except ValueError:
            errors["repeat_until"] = _("A date like 2026-12-31.")
    elif end != "never":
        errors["repeat_end"] = _("Choose one of the offered values.")
    if errors.keys() & {"repeat", "interval", "repeat_count", "repeat_until", "repeat_end"}:
        return None
    assert interval is not None
    return Rule(freq, interval, count=count, until=until)
