"""The four record modules as data: their fields, list columns, search, sorting and validation.

Pages (and the JSON API) work from these specs rather than from one handler
per module.  ``validate`` turns a submitted form into field values, or into
``{field: message}`` for every problem at once.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from store.base import Base
from store.models import Account, Contact, Lead, LeadStatus, Opportunity

MAX_ID = 2**63 - 1  # ids are BIGINT on PostgreSQL: a larger number names no row
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^[0-9+()\-\s./#*转x]{3,40}$")


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "text"  # text | email | phone | textarea | choice | money | date | url | ref
    required: bool = False
    choices: tuple[str, ...] = ()
    max_length: int = 255
    ref: str | None = None  # for kind "ref": the module whose record this names


@dataclass(frozen=True)
class Module:
    key: str  # URL and permission module: "leads"
    record_type: str  # "lead"
    model: type[Base]
    title: str
    singular: str
    fields: tuple[Field, ...]
    columns: tuple[str, ...]
    # Sortable columns: never NULL, so keyset pagination holds.
    sorts: tuple[str, ...]
    default_sort: str
    # Columns a search term matches as a prefix (besides email addresses and phone numbers).
    names: tuple[str, ...]
    filters: tuple[str, ...] = ()
    phones: tuple[str, ...] = field(default=("phone", "mobile"))
    # Values a filter offers where they differ from what a form may choose (a converted
    # lead is found by its status, but no form sets it).
    filter_values: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def filter_choices(self, name: str) -> tuple[str, ...]:
        """The values a list filter offers; empty for a free-text filter."""
        for filtered, values in self.filter_values:
            if filtered == name:
                return values
        if any(f.name == name for f in self.fields):
            return self.field(name).choices
        return ()

    def display(self, record: Any) -> str:
        if self.record_type in ("lead", "contact"):
            name = (
                f"{record.last_name}{record.first_name}"
                if _cjk(record.last_name)
                else (f"{record.first_name} {record.last_name}".strip())
            )
            return name or (record.email or f"#{record.id}")
        return str(record.name)


def _cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text or "")


_SOURCES = ("web", "email", "phone", "referral", "trade_show", "campaign", "other")
_PERSON = (
    Field("last_name", "Last name", required=True, max_length=120),
    Field("first_name", "First name", max_length=120),
    Field("title", "Job title", max_length=120),
    Field("email", "Email", "email", max_length=320),
    Field("phone", "Phone", "phone", max_length=64),
    Field("mobile", "Mobile", "phone", max_length=64),
)

LEADS = Module(
    key="leads", record_type="lead", model=Lead, title="Leads", singular="Lead",
    fields=(*_PERSON,
            Field("company", "Company"),
            Field("website", "Website", "url"),
            Field("status", "Status", "choice", required=True,
                  choices=tuple(s.value for s in LeadStatus if s != LeadStatus.CONVERTED)),
            Field("source", "Source", "choice", choices=_SOURCES, max_length=40),
            Field("description", "Description", "textarea", max_length=20000)),
    columns=("last_name", "company", "email", "phone", "status", "source", "created_at"),
    sorts=("created_at", "updated_at", "last_name"), default_sort="-created_at",
    names=("last_name", "company"), filters=("status", "source"),
    filter_values=(("status", tuple(s.value for s in LeadStatus)),),
)  # fmt: skip
CONTACTS = Module(
    key="contacts", record_type="contact", model=Contact, title="Contacts", singular="Contact",
    fields=(*_PERSON,
            Field("source", "Source", "choice", choices=_SOURCES, max_length=40),
            Field("description", "Description", "textarea", max_length=20000)),
    columns=("last_name", "title", "email", "phone", "mobile", "created_at"),
    sorts=("created_at", "updated_at", "last_name"), default_sort="-created_at",
    names=("last_name", "first_name"), filters=("source",),
)  # fmt: skip
ACCOUNTS = Module(
    key="accounts", record_type="account", model=Account, title="Accounts", singular="Account",
    fields=(Field("name", "Name", required=True),
            Field("industry", "Industry", max_length=80),
            Field("website", "Website", "url"),
            Field("email", "Email", "email", max_length=320),
            Field("phone", "Phone", "phone", max_length=64),
            Field("street", "Street"),
            Field("city", "City", max_length=120),
            Field("region", "Province", max_length=120),
            Field("postal_code", "Postal code", max_length=20),
            Field("country", "Country", max_length=2),
            Field("description", "Description", "textarea", max_length=20000)),
    columns=("name", "industry", "city", "phone", "created_at"),
    sorts=("created_at", "updated_at", "name"), default_sort="name",
    names=("name",), filters=("industry",), phones=("phone",),
)  # fmt: skip
OPPORTUNITIES = Module(
    key="opportunities", record_type="opportunity", model=Opportunity, title="Opportunities",
    singular="Opportunity",
    fields=(Field("name", "Name", required=True),
            Field("account_id", "Account", "ref", ref="accounts"),
            Field("contact_id", "Contact", "ref", ref="contacts"),
            Field("amount", "Amount", "money"),
            Field("currency", "Currency", "choice", required=True,
                  choices=("CNY", "USD", "EUR", "HKD", "JPY"), max_length=3),
            Field("expected_close", "Expected close", "date"),
            Field("next_step", "Next step"),
            Field("source", "Source", "choice", choices=_SOURCES, max_length=40),
            Field("description", "Description", "textarea", max_length=20000)),
    columns=("name", "account_id", "amount", "stage_id", "expected_close", "created_at"),
    sorts=("created_at", "updated_at", "name"), default_sort="-created_at",
    names=("name",), filters=("stage_id",), phones=(),
)  # fmt: skip
MODULES: dict[str, Module] = {m.key: m for m in (LEADS, CONTACTS, ACCOUNTS, OPPORTUNITIES)}
BY_TYPE: dict[str, Module] = {m.record_type: m for m in MODULES.values()}


def db_int(text: str) -> int | None:
    """A submitted id: None unless it is ASCII digits that fit a BIGINT."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        return None
    return int(text)


def validate(
    module: Module, form: Mapping[str, Any], gettext: Any = lambda s, **k: s.format(**k)
) -> tuple[dict[str, Any], dict[str, str]]:
    """Field values from a submitted form, and a message for every field that is wrong."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in module.fields:
        raw = str(form.get(f.name, "") or "").strip()
        if not raw:
            if f.required:
                errors[f.name] = gettext("This field is required.")
            values[f.name] = "" if f.kind == "textarea" or f.name in _NOT_NULL else None
            continue
        if len(raw) > f.max_length:
            errors[f.name] = gettext("At most {n} characters.", n=f.max_length)
            continue
        try:
            values[f.name] = _parse(f, raw, gettext)
        except ValueError as err:
            errors[f.name] = str(err)
    return values, errors


# Text columns that are NOT NULL in the store: empty is "", never None.
_NOT_NULL = {"first_name", "last_name", "description"}


def _parse(f: Field, raw: str, gettext: Any) -> Any:
    if f.kind == "email":
        if not EMAIL.match(raw):
            raise ValueError(gettext("Not an email address."))
        return raw
    if f.kind == "phone":
        if not PHONE.match(raw) or sum(ch.isdigit() for ch in raw) < 3:
            raise ValueError(gettext("Not a phone number."))
        return raw
    if f.kind == "url":
        return raw if "://" in raw else f"https://{raw}"
    if f.kind == "choice":
        if raw not in f.choices:
            raise ValueError(gettext("Choose one of the offered values."))
        return raw
    if f.kind == "money":
        try:
            amount = Decimal(raw.replace(",", "").replace("¥", "").replace("￥", ""))
        except InvalidOperation:
            raise ValueError(gettext("Not an amount.")) from None
        if amount < 0 or amount >= Decimal("1e16") or not amount.is_finite():
            raise ValueError(gettext("Not an amount."))
        return amount.quantize(Decimal("0.01"))
    if f.kind == "date":
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:
            raise ValueError(gettext("A date like 2026-12-31.")) from None
    if f.kind == "ref":
        record_id = db_int(raw)
        if record_id is None:
            raise ValueError(gettext("Choose a record."))
        return record_id
    return raw
