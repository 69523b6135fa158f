"""The JSON API's bodies, answers and query strings, as pydantic models.

Every request is validated by its model and ``/api/v1/openapi.json`` is
generated from the same models (``web/openapi.py``), so the document cannot
drift from what the API accepts.  The record models are made from the field
specs the forms validate with (``web/modules.py``), and run the forms' own
rules (``_parse``), so a value a form refuses the API refuses with the same
message.  Bodies are validated strictly as JSON: ``"12"`` is not an id.
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    create_model,
)
from pydantic import Field as Spec
from pydantic import ValidationError as PydanticError

from store.models import ActivityKind, ActivityStatus
from store.pipeline import STAGE_FIELDS
from web.modules import _NOT_NULL, MAX_ID, MODULES, PHONE, Field, Module, _parse

MAX_LIMIT = 200
# Bodies: unknown fields are errors, JSON types are exact, text is trimmed as forms trim it.
BODY = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)
# Query strings are text: "50" is a number there.
QUERY = ConfigDict(extra="forbid", str_strip_whitespace=True)
ANSWER = ConfigDict(extra="forbid", from_attributes=True)
RECORD_TYPES = "|".join(m.record_type for m in MODULES.values())

Id = Annotated[int, Spec(ge=1, le=MAX_ID, examples=[12])]
RecordRef = Annotated[
    str,
    Spec(pattern=rf"^({RECORD_TYPES}):[1-9][0-9]{{0,17}}$", examples=["contact:12"],
         description="a record as type:id"),
]  # fmt: skip
Money = Annotated[
    Decimal,
    Spec(ge=0, lt=Decimal("1e16"), examples=["88000.00"],
         description="an amount, as a string (exact) or a number"),
    AfterValidator(lambda d: d.quantize(Decimal("0.01"))),
]  # fmt: skip


class Error(BaseModel):
    """A refusal: no token (401), no permission (403), nothing in scope by that id (404)."""

    error: str


class Problems(BaseModel):
    """Every problem of a request at once, by field (``records.0`` for a list's first item)."""

    errors: dict[str, str]


def problems_of(err: PydanticError) -> dict[str, str]:
    """pydantic's errors as ``{field: message}``, the first message of each field."""
    found: dict[str, str] = {}
    for item in err.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        if item["type"] == "missing" or (
            item["type"] == "string_too_short" and item["ctx"]["min_length"] == 1
        ):
            message = "This field is required."  # what the forms say
        elif item["type"] == "value_error":
            message = str(item["ctx"]["error"])  # the forms' own message
        else:
            message = item["msg"]
        found.setdefault(where, message)
    return found


# Records -----------------------------------------------------------------------------------


def _form_rule(f: Field, value: Any) -> Any:
    """The form's check and normal form of a value.

    Empty text clears a text field (as on the forms); an empty address or number
    is refused, as the document's ``format`` and ``pattern`` say (null clears those).
    """
    if value == "" and f.kind in ("text", "textarea", "url"):
        return value
    return _parse(f, value, lambda s, **k: s.format(**k))


def _value_type(f: Field, required: bool) -> Any:
    """A field's input type: its JSON type and limits, then the form's rule."""
    if f.kind == "ref":
        return Id
    if f.kind == "money":
        return Money
    if f.kind == "date":
        return Annotated[dt.date, Spec(examples=["2026-12-31"])]
    if f.kind == "choice":
        return Annotated[Literal[f.choices], Spec(examples=[f.choices[0]])]
    extra: dict[str, Any] = {}
    example = "王芳" if f.name in ("last_name", "first_name", "name") else "示例"
    if f.kind == "email":
        extra, example = {"format": "email"}, "wang.fang@jinlong.cn"
    elif f.kind == "phone":
        extra, example = {"pattern": PHONE.pattern}, "13800138000"
    elif f.kind == "url":
        example = "https://www.jinlong.cn"
    return Annotated[
        str,
        Spec(min_length=1 if required else 0, max_length=f.max_length, examples=[example],
             json_schema_extra=extra or None),
        AfterValidator(functools.partial(_form_rule, f)),
    ]  # fmt: skip


# A new record takes these when the body leaves them out (what the forms preselect).
CREATE_DEFAULTS = {("leads", "status"): "new", ("opportunities", "currency"): "CNY"}


def _input_model(module: Module, creating: bool) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for f in module.fields:
        kind = _value_type(f, f.required)
        if not creating:  # left out: unchanged; required and NOT NULL fields take no null
            fields[f.name] = (kind if f.required or f.name in _NOT_NULL else kind | None, None)
        elif f.required:
            fields[f.name] = (kind, CREATE_DEFAULTS.get((module.key, f.name), ...))
        elif f.name in _NOT_NULL:
            fields[f.name] = (kind, "")
        else:
            fields[f.name] = (kind | None, None)
    fields["owner_id"] = (Id | None, Spec(None, description="someone the caller may assign to"))
    verb = "Create" if creating else "Update"
    doc = (
        f"A new {module.singular.lower()}, owned by the caller unless owner_id says otherwise."
        if creating
        else f"The {module.singular.lower()} fields to change; fields left out stay as they are."
    )
    return create_model(f"{module.singular}{verb}", __config__=BODY, __doc__=doc, **fields)


def _output_type(f: Field) -> Any:
    base: Any = {"ref": int, "money": Decimal, "date": dt.date}.get(f.kind, str)
    return base if f.name in _NOT_NULL or (f.required and f.kind != "choice") else base | None


def _output_model(module: Module) -> type[BaseModel]:
    fields: dict[str, Any] = {"id": (int, ...)}
    fields.update({f.name: (_output_type(f), ...) for f in module.fields})
    if module.key == "leads":
        fields["status"] = (str, ...)  # a converted lead is found by it, though no form sets it
        fields["converted_at"] = (dt.datetime | None, ...)
    if module.key == "opportunities":
        fields["stage_id"] = (int, ...)
        fields["probability"] = (int, ...)
    fields.update(owner_id=(int | None, ...), team_id=(int | None, ...),
                  created_at=(dt.datetime, ...), updated_at=(dt.datetime, ...))  # fmt: skip
    return create_model(module.singular, __config__=ANSWER,
                        __doc__=f"A {module.singular.lower()} as the API shows it.",
                        **fields)  # fmt: skip


def _list_query(module: Module) -> type[BaseModel]:
    sorts = (*module.sorts, *(f"-{s}" for s in module.sorts))
    fields: dict[str, Any] = {
        "q": (Annotated[str, Spec(max_length=200, examples=["王"])] | None,
              Spec(None, description="an email address, a phone number, or a name's start")),
        "sort": (Literal[sorts] | None,
                 Spec(None, description=f"a column; '-' for descending (default "
                                        f"{module.default_sort})")),
        "limit": (Annotated[int, Spec(ge=1, le=MAX_LIMIT)], 50),
        "cursor": (Annotated[str, Spec(max_length=500)] | None,
                   Spec(None, description="the `next` of the previous page, with the same sort")),
        "owner": (Literal["me"] | Id | None, Spec(None, description="'me' or a user id")),
    }  # fmt: skip
    for name in module.filters:
        choices = module.filter_choices(name)
        if name.endswith("_id"):
            kind: Any = Id
        elif choices:
            kind = Literal[choices]
        else:
            kind = Annotated[str, Spec(max_length=255)]
        fields[name] = (kind | None, None)
    return create_model(f"{module.singular}ListQuery", __config__=QUERY, **fields)


class RecordModels:
    """What the API takes and gives for one module."""

    def __init__(self, module: Module) -> None:
        self.create = _input_model(module, creating=True)
        self.update = _input_model(module, creating=False)
        self.out = _output_model(module)
        self.page = create_model(
            f"{module.singular}Page", __config__=ANSWER,
            __doc__=f"A page of {module.title.lower()}; `next` is null on the last.",
            items=(list[self.out], ...),  # type: ignore[name-defined]
            next=(str | None, ...),
        )  # fmt: skip
        self.query = _list_query(module)


RECORDS: dict[str, RecordModels] = {key: RecordModels(module) for key, module in MODULES.items()}


# Activities, conversion, stages, dialling -------------------------------------------------

CREATED_KINDS = tuple(k.value for k in ActivityKind if k != ActivityKind.EMAIL)


class Repeat(BaseModel):
    """Repeat daily, weekly or monthly, every ``interval``; after ``count`` times or until a
    day (one of the two, or neither to repeat without end)."""

    model_config = ConfigDict(
        **BODY, json_schema_extra={"examples": [{"freq": "weekly", "interval": 1, "count": 8}]}
    )
    freq: Literal["daily", "weekly", "monthly"]
    interval: Annotated[int, Spec(ge=1, le=99)] = 1
    count: Annotated[int, Spec(ge=1, le=999)] | None = None
    until: dt.date | None = Spec(None, description="the last day, in the owner's time zone")


class ActivityCreate(BaseModel):
    """A note, task, meeting, call or visit, linked to the records it concerns."""

    model_config = BODY
    kind: Literal[CREATED_KINDS]  # type: ignore[valid-type]
    subject: Annotated[str, Spec(min_length=1, max_length=500, examples=["电话沟通报价"])]
    body: Annotated[str, Spec(max_length=20000)] = ""
    records: Annotated[list[RecordRef], Spec(min_length=1, max_length=20)]
    occurred_at: AwareDatetime | None = Spec(None, description="when it happened or starts")
    ends_at: AwareDatetime | None = None
    due_at: AwareDatetime | None = None
    location: Annotated[str, Spec(max_length=255)] | None = None
    status: Literal[tuple(s.value for s in ActivityStatus)] | None = Spec(  # type: ignore[valid-type]
        None, description="planned for tasks and meetings, done for the rest, unless given"
    )
    remind_minutes: Annotated[int, Spec(ge=0, le=10080)] | None = Spec(
        None, description="remind the owner this long before the due time (a task) or the start"
    )
    repeat: Repeat | None = None


class Activity(BaseModel):
    """One entry of a timeline."""

    model_config = ANSWER
    id: int
    kind: str
    subject: str
    body: str
    status: str
    occurred_at: dt.datetime
    ends_at: dt.datetime | None
    due_at: dt.datetime | None
    location: str | None
    owner_id: int | None
    email_id: int | None
    call_id: int | None
    remind_at: dt.datetime | None
    recurrence: str | None = Spec(description="RFC 5545 RRULE: FREQ=WEEKLY;INTERVAL=1;COUNT=8")


class ActivityPage(BaseModel):
    """A page of a record's timeline, newest first; `next` is null on the last."""

    model_config = ANSWER
    items: list[Activity]
    next: str | None


class TimelineQuery(BaseModel):
    model_config = QUERY
    kind: Literal[tuple(k.value for k in ActivityKind)] | None = None  # type: ignore[valid-type]
    limit: Annotated[int, Spec(ge=1, le=MAX_LIMIT)] = 50
    cursor: Annotated[str, Spec(max_length=500)] | None = None


class LeadConvert(BaseModel):
    """Turn a lead into a contact, with a new or existing account, and perhaps a deal."""

    model_config = BODY
    account_id: Id | None = Spec(None, description="an existing account; else a new one")
    account_name: Annotated[str, Spec(min_length=1, max_length=255)] | None = None
    create_opportunity: bool = False
    opportunity_name: Annotated[str, Spec(min_length=1, max_length=255)] | None = None
    amount: Money | None = None
    expected_close: dt.date | None = None
    stage_id: Id | None = Spec(None, description="the deal's stage; else the first open one")


class Converted(BaseModel):
    model_config = ANSWER
    account_id: int
    contact_id: int
    opportunity_id: int | None


def _stage_values() -> type[BaseModel]:
    deals = MODULES["opportunities"]
    names = {f.name: f for f in deals.fields}
    fields: dict[str, Any] = {}
    for name in sorted(STAGE_FIELDS):
        f = names.get(name, Field(name, name, max_length=255))
        fields[name] = (_value_type(f, f.required) | None, None)
    return create_model("StageValues", __config__=BODY,
                        __doc__="Deal fields to set with the move (what a stage may require).",
                        **fields)  # fmt: skip


StageValues = _stage_values()


class StageMove(BaseModel):
    """Move a deal to a stage; a stage's required fields must be set or given in `values`."""

    model_config = BODY
    stage_id: Id
    values: StageValues = Spec(default_factory=StageValues)  # type: ignore[valid-type]
    probability: Annotated[int, Spec(ge=0, le=100)] | None = Spec(
        None, description="overrides the stage's probability from now on"
    )


class Dial(BaseModel):
    """Click-to-dial: the caller's phone rings, then the number."""

    model_config = BODY
    number: Annotated[str, Spec(pattern=r"^[0-9+()\-\s./#*转x]*[0-9][0-9+()\-\s./#*转x]*$",
                                max_length=40, examples=["13800138000"])]  # fmt: skip
    record: RecordRef | None = Spec(None, description="the record dialled from, for the call")


class Dialling(BaseModel):
    model_config = ANSWER
    request: str
    state: Literal["dialling"]


# Mail ----------------------------------------------------------------------------------------
# The JSON types are checked here; addresses, records, documents and templates by the outbox
# the daemon hands in (``web.api.MailApi``), which ignores fields it does not know.

MAIL = ConfigDict(extra="ignore", strict=True)
MailRecord = Annotated[str, Spec(pattern=r"^[a-z_]+:[0-9]+$", examples=["contact:12"])]
Addresses = Annotated[str | list[str], Spec(examples=[["wang.fang@jinlong.cn"]])]


class MailTemplateRef(BaseModel):
    """A mail template by name (and language), with the records whose fields it merges."""

    model_config = MAIL
    name: Annotated[str, Spec(examples=["quote"])]
    language: str = ""
    contact_id: int | None = None
    lead_id: int | None = None
    account_id: int | None = None
    opportunity_id: int | None = None


class MailSend(BaseModel):
    """A mail to queue: the words, or a template with the records to merge."""

    model_config = MAIL
    to: Addresses = []
    cc: Addresses = []
    bcc: Addresses = []
    subject: Annotated[str, Spec(examples=["报价单"])] | None = None
    text: str | None = None
    html: str | None = None
    template: MailTemplateRef | None = None
    records: list[MailRecord] = Spec([], description="records to file the mail on")
    documents: list[int] = Spec([], description="ids of record documents to attach")
    in_reply_to: str | None = None


class MailPreview(BaseModel):
    """A template to render: ``{"template": {...}}``, or the template's fields themselves."""

    model_config = MAIL
    template: MailTemplateRef | None = None
    name: str | None = None
    language: str | None = None
    contact_id: int | None = None
    lead_id: int | None = None
    account_id: int | None = None
    opportunity_id: int | None = None


class MailQueued(BaseModel):
    email_id: int
    state: Literal["queued"]


class MailRendered(BaseModel):
    subject: str
    text: str
    html: str | None
