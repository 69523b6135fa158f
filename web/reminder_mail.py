"""A reminder mail's words, in its owner's language and time zone.

The daemon queues it through the outbox (``daemon.reminders``); the words are
the web UI's, so they come from the same catalogue and are checked with it.
"""

from __future__ import annotations

from store.reminders import Reminder
from web.i18n import Translator
from web.modules import BY_TYPE


def reminder_words(reminder: Reminder, public_url: str | None) -> tuple[str, str]:
    """The subject and plain text of the reminder mail to the activity's owner."""
    t = Translator(reminder.locale, reminder.timezone)
    _ = t.gettext
    when = t.datetime(reminder.at, "medium")
    subject = _("Reminder: {subject} at {time}", subject=reminder.subject, time=when)
    lines = [
        _("{kind}: {subject}", kind=_(reminder.kind), subject=reminder.subject),
        _("When: {time}", time=when),
    ]
    if reminder.location:
        lines.append(_("Where: {place}", place=reminder.location))
    base = (public_url or "").rstrip("/")
    if base:
        lines.append("")
        lines.append(f"{base}/activities/{reminder.activity_id}")
        lines += [f"{base}/{BY_TYPE[kind].key}/{rid}" for kind, rid in reminder.records
                  if kind in BY_TYPE]  # fmt: skip
    lines += ["", _("You set this reminder in Rapport.")]
    return subject, "\n".join(lines) + "\n"
