"""The pipeline: a board of deals by stage, moving them, and the funnel.

A deal is dragged to another column (``web/static/pipeline.js``) or moved with
the select on its card (no script needed).  The move goes through
``store.pipeline.advance_stage``: a stage that needs fields (an amount and a
close date before Proposal, say) refuses with 422 naming them, and the page
asks for them and tries again.  Every move writes the stage history, which the
deal's own page shows with the time spent in each stage (``web/records.py``).

Totals keep each currency apart (there are no exchange rates to add them up);
the charts are drawn in the house currency.  Won and lost count the deals
closed in the last ``CLOSED_WINDOW``, so the columns do not grow forever.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.access import Access
from store.base import utcnow
from store.db import Store
from store.errors import NotFound, ValidationError
from store.models import Account, Opportunity, PipelineStage, User
from store.pipeline import DEFAULT_PIPELINE, REQUIRED, STAGE_FIELDS, advance_stage
from web.auth import Viewer, permitted
from web.charts import Bar, funnel
from web.i18n import Translator
from web.modules import OPPORTUNITIES, Field, _parse, db_int
from web.render import render

PIPELINE_STORE_KEY = web.AppKey("pipeline_store", Store)
HOUSE_CURRENCY = "CNY"  # the charts' currency; other currencies are listed beside it
CLOSED_WINDOW = dt.timedelta(days=90)
COLUMN_SHOWN = 100  # cards per open column; the rest are a link to the filtered list
CLOSED_SHOWN = 20  # won and lost columns show their latest deals only
CENT = Decimal("0.01")
# Fields a stage may ask for when a deal enters it, typed in on the board.
STAGE_INPUTS = {
    f.name: f
    for f in OPPORTUNITIES.fields
    if f.name in STAGE_FIELDS and f.kind in ("money", "date", "text", "choice")
}
STAGE_INPUTS["lost_reason"] = Field("lost_reason", "Reason lost")
# Anything else a stage needs (an account, a contact) is set on the deal's own form.
LABELS = {f.name: f.label for f in OPPORTUNITIES.fields} | {"lost_reason": "Reason lost"}


@dataclass
class StageTotals:
    """One column's deals: how many, and their amount and weighted amount per currency."""

    count: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)
    weighted: dict[str, Decimal] = field(default_factory=dict)

    def add(self, currency: str, count: int, amount: Decimal, probability: int) -> None:
        self.count += count
        self.amounts[currency] = self.amounts.get(currency, Decimal(0)) + amount
        self.weighted[currency] = self.weighted.get(currency, Decimal(0)) + amount * probability

    def merge(self, other: StageTotals) -> None:
        self.count += other.count
        for currency, amount in other.amounts.items():
            self.amounts[currency] = self.amounts.get(currency, Decimal(0)) + amount
        for currency, weighted in other.weighted.items():
            self.weighted[currency] = self.weighted.get(currency, Decimal(0)) + weighted

    def amount_in(self, currency: str = HOUSE_CURRENCY) -> Decimal:
        return self.amounts.get(currency, Decimal(0))

    def weighted_in(self, currency: str = HOUSE_CURRENCY) -> Decimal:
        # Summed as amount × percent and divided once, then rounded to the cent once.
        raw = self.weighted.get(currency, Decimal(0)) / 100
        return raw.quantize(CENT, rounding=ROUND_HALF_UP)

    def currencies(self) -> list[str]:
        return sorted(self.amounts, key=lambda c: (c != HOUSE_CURRENCY, c)) or [HOUSE_CURRENCY]

    def amount_text(self, t: Translator) -> str:
        return " + ".join(t.money(self.amount_in(c), c) for c in self.currencies())

    def weighted_text(self, t: Translator) -> str:
        return " + ".join(t.money(self.weighted_in(c), c) for c in self.currencies())


def _viewer(request: web.Request, action: str = "view") -> Viewer:
    return permitted(request, ("opportunities", action))


async def board_stages(session: AsyncSession) -> list[PipelineStage]:
    """The default pipeline's active stages, in order."""
    return list(
        (
            await session.scalars(
                select(PipelineStage)
                .where(
                    PipelineStage.pipeline == DEFAULT_PIPELINE,
                    PipelineStage.is_active.is_(True),
                )
                .order_by(PipelineStage.position, PipelineStage.id)
            )
        ).all()
    )


def _counted(stages: Sequence[PipelineStage], now: dt.datetime) -> Any:
    """Deals on the board: every open one, and those closed within the window."""
    open_ids = [s.id for s in stages if not s.is_closed]
    closed_ids = [s.id for s in stages if s.is_closed]
    closed_on = func.coalesce(Opportunity.closed_at, Opportunity.updated_at)
    return or_(
        Opportunity.stage_id.in_(open_ids),
        Opportunity.stage_id.in_(closed_ids) & (closed_on >= now - CLOSED_WINDOW),
    )


async def stage_totals(
    session: AsyncSession, access: Access, stages: Sequence[PipelineStage], now: dt.datetime
) -> dict[int, StageTotals]:
    """Per stage, the viewer's deals in scope: count, amount and weighted amount.

    Grouped by probability as well, so the weighting is exact: the sum of
    amounts at one probability times that probability.
    """
    rows = await session.execute(
        select(
            Opportunity.stage_id, Opportunity.currency, Opportunity.probability,
            func.count(), func.sum(Opportunity.amount),
        )
        .where(Opportunity.deleted_at.is_(None), access.visible(Opportunity),
               _counted(stages, now))
        .group_by(Opportunity.stage_id, Opportunity.currency, Opportunity.probability)
    )  # fmt: skip
    totals = {s.id: StageTotals() for s in stages}
    for stage_id, currency, probability, count, amount in rows:
        # SQLite sums NUMERIC as a float: back to cents before any arithmetic.
        exact = Decimal(amount or 0).quantize(CENT, rounding=ROUND_HALF_UP)
        totals[stage_id].add(currency, int(count), exact, int(probability))
    return totals


def funnel_chart(
    t: Translator, stages: Sequence[PipelineStage], totals: dict[int, StageTotals]
) -> Markup:
    """The funnel (won included, lost left out), in the house currency."""
    svg = funnel(
        [
            Bar(f"{t.gettext(s.name)} · {t.number(totals[s.id].count)}",
                float(totals[s.id].amount_in()),
                f"{t.money(totals[s.id].amount_in(), HOUSE_CURRENCY)} · {t.gettext('weighted')} "
                f"{t.money(totals[s.id].weighted_in(), HOUSE_CURRENCY)}",
                float(totals[s.id].weighted_in()))
            for s in stages if not s.is_lost
        ],
        t.gettext("Pipeline by stage: amount, and weighted by probability"),
    )  # fmt: skip
    return Markup(svg)  # noqa: S704 (every text in it is escaped by web.charts)


def _column_query(live: Any, stage: PipelineStage, now: dt.datetime) -> Any:
    """A column's cards: open deals by expected close; closed ones latest first."""
    if stage.is_closed:
        closed_on = func.coalesce(Opportunity.closed_at, Opportunity.updated_at)
        return (
            live.where(Opportunity.stage_id == stage.id, closed_on >= now - CLOSED_WINDOW)
            .order_by(closed_on.desc(), Opportunity.id.desc())
            .limit(CLOSED_SHOWN)
        )
    return (
        live.where(Opportunity.stage_id == stage.id)
        .order_by(Opportunity.expected_close.is_(None), Opportunity.expected_close, Opportunity.id)
        .limit(COLUMN_SHOWN)
    )


async def board(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    access, now = viewer.access, utcnow()
    async with request.app[PIPELINE_STORE_KEY].session() as session:
        stages = await board_stages(session)
        totals = await stage_totals(session, access, stages, now)
        live = select(Opportunity).where(
            Opportunity.deleted_at.is_(None), access.visible(Opportunity)
        )
        columns: dict[int, list[Opportunity]] = {}
        for stage in stages:
            columns[stage.id] = list((await session.scalars(_column_query(live, stage, now))).all())
        deals = [d for column in columns.values() for d in column]
        account_rows = await session.execute(
            select(Account.id, Account.name).where(
                Account.id.in_({d.account_id for d in deals if d.account_id}),
                Account.deleted_at.is_(None),
            )
        )
        accounts: dict[int, str] = {account_id: name for account_id, name in account_rows}
        owners = {
            uid: name or username
            for uid, name, username in await session.execute(
                select(User.id, User.display_name, User.username).where(
                    User.id.in_({d.owner_id for d in deals if d.owner_id})
                )
            )
        }
    return render(request, "pipeline.html", {
        "stages": stages, "columns": columns, "totals": totals, "accounts": accounts,
        "owners": owners, "closed_days": CLOSED_WINDOW.days,
    })  # fmt: skip


async def funnel_page(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    async with request.app[PIPELINE_STORE_KEY].session() as session:
        stages = await board_stages(session)
        totals = await stage_totals(session, viewer.access, stages, utcnow())
    open_total = StageTotals()
    for s in stages:
        if not s.is_closed:
            open_total.merge(totals[s.id])
    return render(request, "pipeline_funnel.html", {
        "stages": stages, "totals": totals, "open_total": open_total,
        "chart": funnel_chart(viewer.t, stages, totals), "closed_days": CLOSED_WINDOW.days,
        "house": HOUSE_CURRENCY,
    })  # fmt: skip


class _BadRequest(Exception):
    pass


async def _move_request(request: web.Request) -> tuple[bool, int, int, dict[str, Any]]:
    """(JSON?, deal id, stage id, values as typed) from the script's JSON or the card's form."""
    wants_json = request.content_type == "application/json"
    body: Any
    if wants_json:
        try:
            body = await request.json()
        except ValueError:
            raise _BadRequest from None
        if not isinstance(body, dict):
            raise _BadRequest
        values = body.get("values")
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise _BadRequest
    else:
        body = dict(await request.post())
        values = body
    ids = []
    for key in ("opportunity", "stage"):
        text = str(body.get(key, ""))
        if not (text.isascii() and text.isdigit()):
            raise _BadRequest
        found = db_int(text)
        if found is None:  # past BIGINT: names no row
            raise web.HTTPNotFound()
        ids.append(found)
    return wants_json, ids[0], ids[1], values


def _typed(t: Translator, raw_values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, spec in STAGE_INPUTS.items():
        raw = str(raw_values.get(name, "") or "").strip()
        if not raw:
            continue
        if len(raw) > spec.max_length:
            errors[name] = t.gettext("At most {n} characters.", n=spec.max_length)
            continue
        try:
            values[name] = _parse(spec, raw, t.gettext)
        except ValueError as err:
            errors[name] = str(err)
    return values, errors


def _asked(t: Translator, errors: dict[str, str]) -> list[dict[str, Any]]:
    """The fields to ask for, each with how it is typed in ("elsewhere": on the deal's form)."""
    asked = []
    for name, message in errors.items():
        spec = STAGE_INPUTS.get(name)
        asked.append({
            "name": name, "label": t.gettext(LABELS.get(name, name)),
            "kind": spec.kind if spec else "elsewhere",
            "choices": list(spec.choices) if spec else [],
            "error": t.gettext("Needed to enter this stage.") if message == REQUIRED else message,
        })  # fmt: skip
    return asked


async def move(request: web.Request) -> web.StreamResponse:
    """Move a deal: JSON from the board's script, or the card's plain form."""
    viewer = _viewer(request, "edit")
    t = viewer.t
    try:
        wants_json, deal_id, stage_id, raw_values = await _move_request(request)
    except _BadRequest:
        raise web.HTTPBadRequest(text="opportunity and stage are numbers") from None
    values, errors = _typed(t, raw_values)
    async with request.app[PIPELINE_STORE_KEY].session() as session, session.begin():
        deal = await session.get(Opportunity, deal_id)
        if deal is None or deal.deleted_at is not None or not viewer.access.may_see(deal):
            raise web.HTTPNotFound()
        stage = await session.get(PipelineStage, stage_id)
        if stage is None or not stage.is_active or stage.pipeline != DEFAULT_PIPELINE:
            raise web.HTTPNotFound()
        if not errors:
            try:
                await advance_stage(session, deal_id, stage_id, user_id=viewer.user_id,
                                    values=values)  # fmt: skip
            except ValidationError as err:
                if "stage_id" in err.errors:  # another pipeline's deal
                    raise web.HTTPNotFound() from None
                errors = {k: str(v) for k, v in err.errors.items()}
            except NotFound:
                raise web.HTTPNotFound() from None
        name, stage_name = deal.name, stage.name
    if not errors:
        if wants_json:
            return web.json_response({"ok": True, "stage": stage_id})
        raise web.HTTPSeeOther(f"/pipeline#deal-{deal_id}")
    asked = _asked(t, errors)
    edit = f"/opportunities/{deal_id}/edit"
    if wants_json:
        return web.json_response({"errors": {f["name"]: f["error"] for f in asked},
                                  "fields": asked, "stage": t.gettext(stage_name), "edit": edit},
                                 status=422)  # fmt: skip
    return render(request, "pipeline_move.html", {
        "deal_id": deal_id, "deal_name": name, "stage_id": stage_id, "stage_name": stage_name,
        "fields": asked, "values": raw_values, "edit": edit,
    }, status=422)  # fmt: skip


def add_pipeline_routes(app: web.Application, store: Store) -> None:
    app[PIPELINE_STORE_KEY] = store
    app.router.add_get("/pipeline", board)
    app.router.add_get("/pipeline/funnel", funnel_page)
    app.router.add_post("/pipeline/move", move)
