"""English and Simplified Chinese: Babel catalogues for words, Babel formats for the rest.

The catalogues are ``web/locale/<locale>.po`` files read with Babel at start
(no compiled ``.mo`` to keep in step); English is the source language.  A
user's ``locale`` chooses; before login, the browser's Accept-Language does.
Dates and times are shown in the user's time zone.
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import format_date, format_datetime, format_skeleton
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

LOCALES = {"en": "English", "zh_CN": "简体中文"}
DEFAULT_LOCALE = "en"
CATALOGUES = Path(__file__).parent / "locale"


@functools.cache
def catalogue(locale: str) -> dict[str, str]:
    """msgid -> translation for ``locale`` (empty for the source language)."""
    path = CATALOGUES / f"{locale}.po"
    if not path.exists():
        return {}
    with path.open("rb") as po:
        read = read_po(po, locale=locale)
    return {m.id: m.string for m in read if m.id and m.string and isinstance(m.id, str)}  # type: ignore[misc]


def best_locale(wanted: str | None, accept_language: str = "") -> str:
    """A supported locale: the one asked for, else the browser's first supported one."""
    if wanted in LOCALES:
        return wanted
    for part in accept_language.split(","):
        tag = part.split(";")[0].strip().replace("-", "_").lower()
        if tag.startswith("zh"):
            return "zh_CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LOCALE


class Translator:
    """What a template needs to speak one locale."""

    def __init__(self, locale: str, timezone: str = "Asia/Shanghai") -> None:
        self.locale = locale if locale in LOCALES else DEFAULT_LOCALE
        self._words = catalogue(self.locale)
        self._babel = Locale.parse(self.locale)
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = ZoneInfo("Asia/Shanghai")

    def gettext(self, text: str, **values: object) -> str:
        said = self._words.get(text, text)
        return said.format(**values) if values else said

    def datetime(self, value: dt.datetime | None, form: str = "short") -> str:
        if value is None:
            return ""
        return format_datetime(value.astimezone(self.zone), form, locale=self._babel)

    def date(self, value: dt.date | dt.datetime | None, form: str = "medium") -> str:
        if value is None:
            return ""
        if isinstance(value, dt.datetime):
            value = value.astimezone(self.zone).date()
        return format_date(value, form, locale=self._babel)

    def month(self, value: dt.date) -> str:
        """A month and its year as the locale says it: "December 2026", "2026年12月"."""
        return format_skeleton("yMMMM", value, locale=self._babel)

    def day(self, value: dt.date) -> str:
        """A day with its weekday, short: "Sat, Dec 5", "12月5日周六"."""
        return format_skeleton("MMMEd", value, locale=self._babel)

    def money(self, amount: Decimal | float | None, currency: str = "CNY") -> str:
        if amount is None:
            return ""
        return format_currency(amount, currency, locale=self._babel)

    def number(self, value: float | int | Decimal | None) -> str:
        return "" if value is None else format_decimal(value, locale=self._babel)

    def local(self, value: dt.datetime) -> dt.datetime:
        return value.astimezone(self.zone)
