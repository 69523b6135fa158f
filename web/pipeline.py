"""The pipeline: a board of deals by stage, moving them, and the funnel.

A deal is dragged to another column (``web/static/pipeline.js``) or moved with
the select on its card (no script needed).  The move goes through
``store.pipeline.advance_stage``: a stage that needs fields (an amount and a
close date before Proposal, say) refuses with 422 naming them, and the page
asks for them and tries again.  Every move writes the stage history.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import select

from store.db import Store
from store.errors import NotFound, ValidationError
from store.models import Account, Opportunity, PipelineStage, User
from store.pipeline import DEFAULT_PIPELINE, advance_stage
from web.auth import VIEWER, Viewer
from web.charts import Bar, funnel
from web.modules import OPPORTUNITIES, Field, _parse
from web.render import render

PIPELINE_STORE_KEY = web.AppKey("pipeline_store", Store)
CLOSED_SHOWN = 20  # won and lost columns show their latest deals only
# Fields a stage may ask for when a deal enters it, with how they are typed in.
STAGE_INPUTS = {f.name: f for f in OPPORTUNITIES.fields if f.kind in ("money", "date", "text")}
STAGE_INPUTS["lost_reason"] = Field("lost_reason", "Reason lost")


def _viewer(request: web.Request, action: str = "view") -> Viewer:
    viewer = request[VIEWER]
    if not viewer.access.can("opportunities", action):
        raise web.HTTPForbidden(text=viewer.t.gettext("You may not do this here."))
    return viewer


async def _stages(request: web.Request) -> list[PipelineStage]:
    async with request.app[PIPELINE_STORE_KEY].session() as session:
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


async def board(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    stages = await _stages(request)
    async with request.app[PIPELINE_STORE_KEY].session() as session:
        deals = (
            await session.scalars(
                select(Opportunity)
                .where(
                    Opportunity.deleted_at.is_(None),
                    viewer.access.visible(Opportunity),
                    Opportunity.stage_id.in_([s.id for s in stages]),
                )
                .order_by(Opportunity.expected_close, Opportunity.id)
            )
        ).all()
        accounts = dict(
            (
                await session.execute(
                    select(Account.id, Account.name).where(
                        Account.id.in_({d.account_id for d in deals if d.account_id})
                    )
                )
            ).all()
        )
        owners = dict(
            (
                await session.execute(
                    select(User.id, User.display_name).where(
                        User.id.in_({d.owner_id for d in deals if d.owner_id})
                    )
                )
            ).all()
        )
    columns: dict[int, list[Opportunity]] = defaultdict(list)
    for deal in deals:
        columns[deal.stage_id].append(deal)
    totals = {s.id: _totals(columns[s.id]) for s in stages}
    for stage in stages:
        if stage.is_closed:
            columns[stage.id] = sorted(
                columns[stage.id], key=lambda d: d.closed_at or d.updated_at, reverse=True
            )[:CLOSED_SHOWN]
    t = viewer.t
    chart = funnel(
        [
            Bar(t.gettext(s.name), float(totals[s.id]["amount"]),
                t.money(totals[s.id]["amount"], "CNY"), float(totals[s.id]["weighted"]))
            for s in stages if not s.is_lost
        ],
        t.gettext("Pipeline by stage: amount, and weighted by probability"),
    )  # fmt: skip
    return render(request, "pipeline.html", {
        "stages": stages, "columns": columns, "totals": totals, "accounts": accounts,
        "owners": owners, "chart": Markup(chart),  # noqa: S704 (built from escaped parts)
    })  # fmt: skip


def _totals(deals: list[Opportunity]) -> dict[str, Any]:
    amount = sum((d.amount or Decimal(0) for d in deals), Decimal(0))
    weighted = sum(((d.amount or Decimal(0)) * d.probability / 100 for d in deals), Decimal(0))
    return {"count": len(deals), "amount": amount, "weighted": weighted.quantize(Decimal("0.01"))}


async def move(request: web.Request) -> web.StreamResponse:
    """Move a deal: JSON from the board's script, or the card's plain form."""
    viewer = _viewer(request, "edit")
    t = viewer.t
    wants_json = request.content_type == "application/json"
    body: dict[str, Any] = dict(await request.json()) if wants_json else dict(await request.post())
    raw_values = body.get("values") if wants_json else body
    try:
        deal_id = int(str(body.get("opportunity", "")))
        stage_id = int(str(body.get("stage", "")))
    except ValueError:
        raise web.HTTPBadRequest(text="opportunity and stage are numbers") from None
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, field in STAGE_INPUTS.items():
        raw = str((raw_values or {}).get(name, "") or "").strip()
        if raw:
            try:
                values[name] = _parse(field, raw, t.gettext)
            except ValueError as err:
                errors[name] = str(err)
    store = request.app[PIPELINE_STORE_KEY]
    async with store.session() as session, session.begin():
        deal = await session.get(Opportunity, deal_id)
        if deal is None or deal.deleted_at is not None or not viewer.access.may_see(deal):
            raise web.HTTPNotFound()
        stage = await session.get(PipelineStage, stage_id)
        if stage is None or not stage.is_active:
            raise web.HTTPNotFound()
        if not errors:
            try:
                await advance_stage(session, deal_id, stage_id, user_id=viewer.user_id,
                                    values=values)  # fmt: skip
            except ValidationError as err:
                errors = {k: _say(t, k, str(v)) for k, v in err.errors.items()}
            except NotFound:
                raise web.HTTPNotFound() from None
        name, stage_name = deal.name, stage.name
    if errors:
        fields = [
            {"name": k, "label": t.gettext(STAGE_INPUTS[k].label) if k in STAGE_INPUTS else k,
             "kind": STAGE_INPUTS[k].kind if k in STAGE_INPUTS else "text", "error": v}
            for k, v in errors.items()
        ]  # fmt: skip
        if wants_json:
            return web.json_response({"errors": errors, "fields": fields,
                                      "stage": t.gettext(stage_name)}, status=422)  # fmt: skip
        return render(request, "pipeline_move.html", {
            "deal_id": deal_id, "deal_name": name, "stage_id": stage_id,
            "stage_name": stage_name, "fields": fields, "values": raw_values or {},
        }, status=422)  # fmt: skip
    if wants_json:
        return web.json_response({"ok": True, "stage": stage_id})
    raise web.HTTPSeeOther("/pipeline")


def _say(t: Any, name: str, message: str) -> str:
    if message.endswith("is required to enter this stage"):
        return str(t.gettext("Needed to enter this stage."))
    return message


def add_pipeline_routes(app: web.Application, store: Store) -> None:
    app[PIPELINE_STORE_KEY] = store
    app.router.add_get("/pipeline", board)
    app.router.add_post("/pipeline/move", move)
