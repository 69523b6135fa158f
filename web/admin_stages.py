"""Admin: the pipeline's stages — order, probability, won/lost, active, required fields.

Positions are kept as 1..n: a stage saved at position 3 goes third and the
rest close up behind it.  A stage is never deleted (deals and their history
point at it); it is made inactive, which the board then leaves out, and only
once no live deal is in it.  The pipeline always keeps one open active stage,
where new deals start.  Required fields are chosen from those a deal may be
given while it changes stage (``store.pipeline.STAGE_FIELDS``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Opportunity, PipelineStage
from store.pipeline import DEFAULT_PIPELINE, STAGE_FIELDS
from web.admin_base import admin_viewer, editor, id_of, store_of
from web.auth import VIEWER
from web.i18n import Translator
from web.modules import OPPORTUNITIES
from web.render import render

LABELS = {f.name: f.label for f in OPPORTUNITIES.fields if f.name in STAGE_FIELDS}
LABELS["lost_reason"] = "Reason lost"
REQUIRABLE = tuple(LABELS)


def requirable(t: Translator) -> list[tuple[str, str]]:
    return [(name, t.gettext(LABELS[name])) for name in REQUIRABLE]


async def _ordered(session: AsyncSession) -> list[PipelineStage]:
    return list(
        (
            await session.scalars(
                select(PipelineStage)
                .where(PipelineStage.pipeline == DEFAULT_PIPELINE)
                .order_by(PipelineStage.position, PipelineStage.id)
            )
        ).all()
    )


def _renumber(stages: list[PipelineStage]) -> None:
    for position, stage in enumerate(stages, start=1):
        if stage.position != position:
            stage.position = position


async def stages_list(request: web.Request) -> web.Response:
    viewer = admin_viewer(request)
    async with store_of(request).session() as session:
        stages = await _ordered(session)
        deals = dict(
            (
                await session.execute(
                    select(Opportunity.stage_id, func.count())
                    .where(Opportunity.deleted_at.is_(None))
                    .group_by(Opportunity.stage_id)
                )
            ).all()
        )
    labels = dict(requirable(viewer.t))
    return render(
        request, "admin/stages.html", {"stages": stages, "deals": deals, "labels": labels}
    )


def _values_of(stage: PipelineStage | None, position: int) -> dict[str, Any]:
    if stage is None:
        return {
            "name": "",
            "position": str(position),
            "probability": "0",
            "is_won": False,
            "is_lost": False,
            "is_active": True,
            "required": [],
        }
    return {
        "name": stage.name,
        "position": str(stage.position),
        "probability": str(stage.probability),
        "is_won": stage.is_won,
        "is_lost": stage.is_lost,
        "is_active": stage.is_active,
        "required": list(stage.required_fields or []),
    }


def _form(
    request: web.Request,
    stage: PipelineStage | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "admin/stage_form.html",
        {
            "stage": stage,
            "values": values,
            "errors": errors,
            "requirable": requirable(request[VIEWER].t),
        },
        status=status,
    )


async def new_stage_form(request: web.Request) -> web.Response:
    editor(request)
    async with store_of(request).session() as session:
        count = len(await _ordered(session))
    return _form(request, None, _values_of(None, count + 1), {})


async def stage_page(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        stage = await session.get(PipelineStage, id_of(request))
    if stage is None or stage.pipeline != DEFAULT_PIPELINE:
        raise web.HTTPNotFound()
    return _form(request, stage, _values_of(stage, stage.position), {})


def _read(form: Any, t: Translator, errors: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": str(form.get("name", "")).strip(),
        "position": str(form.get("position", "")).strip(),
        "probability": str(form.get("probability", "")).strip(),
        "is_won": bool(form.get("is_won")),
        "is_lost": bool(form.get("is_lost")),
        "is_active": bool(form.get("is_active")),
        "required": [str(r) for r in form.getall("required", [])],
    }
    if not values["name"] or len(values["name"]) > 80:
        errors["name"] = t.gettext("Between 1 and {n} characters.", n=80)
    if not values["position"].isdigit() or not 1 <= int(values["position"]) <= 1000:
        errors["position"] = t.gettext("A whole number from 1.")
    if not values["probability"].isdigit() or int(values["probability"]) > 100:
        errors["probability"] = t.gettext("A whole number from 0 to 100.")
    if values["is_won"] and values["is_lost"]:
        errors["is_lost"] = t.gettext("A stage is won or lost, not both.")
    if any(name not in REQUIRABLE for name in values["required"]):
        errors["required"] = t.gettext("Choose one of the offered values.")
    return values


async def save_stage(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    errors: dict[str, str] = {}
    values = _read(await request.post(), t, errors)
    new = request.match_info.get("id") is None
    async with store_of(request).session() as session, session.begin():
        stages = await _ordered(session)
        stage = None if new else next((s for s in stages if s.id == id_of(request)), None)
        if not new and stage is None:
            raise web.HTTPNotFound()
        if any(s.name == values["name"] and s is not stage for s in stages):
            errors["name"] = t.gettext("A stage with this name exists.")
        if stage is not None and stage.is_active and not values["is_active"]:
            deals = await session.scalar(
                select(func.count()).where(
                    Opportunity.stage_id == stage.id, Opportunity.deleted_at.is_(None)
                )
            )
            if deals:
                errors["is_active"] = t.gettext(
                    "{n} deals are in this stage: move them first.", n=deals
                )
        open_elsewhere = any(s.is_active and not s.is_closed for s in stages if s is not stage)
        if not open_elsewhere and not (
            values["is_active"] and not values["is_won"] and not values["is_lost"]
        ):
            errors["is_active"] = t.gettext(
                "The pipeline needs one active stage that is neither won nor lost."
            )
        if not errors:
            if stage is None:
                stage = PipelineStage(pipeline=DEFAULT_PIPELINE, name=values["name"])
                session.add(stage)
            else:
                stages.remove(stage)
            stage.name = values["name"]
            stage.probability = int(values["probability"])
            stage.is_won, stage.is_lost = values["is_won"], values["is_lost"]
            stage.is_active = values["is_active"]
            stage.required_fields = [n for n in REQUIRABLE if n in values["required"]]
            stages.insert(int(values["position"]) - 1, stage)
            _renumber(stages)
            await session.flush()
            stage_id = stage.id
    if errors:
        return _form(request, stage, values, errors, status=422)
    raise web.HTTPSeeOther(f"/admin/stages/{stage_id}?saved=1")


async def move_stage(request: web.Request) -> web.Response:
    """One place up or down, from the list's arrows."""
    editor(request)
    form = await request.post()
    step = -1 if form.get("direction") == "up" else 1
    async with store_of(request).session() as session, session.begin():
        stages = await _ordered(session)
        at = next((n for n, s in enumerate(stages) if s.id == id_of(request)), None)
        if at is None:
            raise web.HTTPNotFound()
        to = at + step
        if 0 <= to < len(stages):
            stages[at], stages[to] = stages[to], stages[at]
        _renumber(stages)
    raise web.HTTPSeeOther("/admin/stages")


def add_stage_routes(app: web.Application) -> None:
    app.router.add_get("/admin/stages", stages_list)
    app.router.add_get("/admin/stages/new", new_stage_form)
    app.router.add_post("/admin/stages/new", save_stage)
    app.router.add_get(r"/admin/stages/{id}", stage_page)
    app.router.add_post(r"/admin/stages/{id}", save_stage)
    app.router.add_post(r"/admin/stages/{id}/move", move_stage)
