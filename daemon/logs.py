"""Logging set up once: one line per event on stderr, with the correlation id."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import TextIO

from store.context import correlation_id

_EMAIL = re.compile(r"([\w.+-])[\w.+-]*@([\w-]+\.[\w.-]+)")
_PHONE = re.compile(r"(?<!\d)(\+?\d[\d -]{5,}\d)(\d{2})(?!\d)")


def redact(text: str) -> str:
    """Hide addresses and phone numbers, keeping enough to tell them apart in a log."""
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(lambda m: "*" * len(m.group(1)) + m.group(2), text)


class _Formatter(logging.Formatter):
    def __init__(self, json_lines: bool, redacting: bool) -> None:
        super().__init__()
        self.json_lines = json_lines
        self.redacting = redacting

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if self.redacting:
            message = redact(message)
        at = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        at = at.replace("+00:00", "Z")
        cid = correlation_id.get()
        if self.json_lines:
            return json.dumps(
                {
                    "at": at,
                    "level": record.levelname,
                    "logger": record.name,
                    "cid": cid,
                    "msg": message,
                },
                ensure_ascii=False,
            )
        # One event, one line: a traceback's newlines are folded so log shippers keep it whole.
        message = message.replace("\n", "\n    ")
        return f"{at} {record.levelname} {record.name} [cid={cid}] {message}"


def setup_logging(
    level: str = "INFO", json_lines: bool = False, stream: TextIO | None = None
) -> None:
    """Configure the root logger for the daemon; callable again (tests, CLI)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(json_lines, redacting=level != "DEBUG"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter stays at WARNING unless we debug.
    for noisy in ("aiohttp.access", "asyncio", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    # mail-parser warns about every part type it has no name for; our defects say what matters.
    logging.getLogger("mailparser").setLevel(logging.DEBUG if level == "DEBUG" else logging.ERROR)
