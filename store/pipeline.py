"""Moving an opportunity through the pipeline, with required fields and stage history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import utcnow
from store.errors import NotFound, ValidationError
from store.models.crm import Opportunity, PipelineStage, StageHistory

# Fields a stage may require and a caller may set while advancing.
STAGE_FIELDS = frozenset(
    {"amount", "currency", "expected_close", "next_step", "contact_id", "account_id", "lost_reason"}
)


def _missing(opportunity: Opportunity, fields: list[str]) -> dict[str, str]:
    return {
        name: "is required to enter this stage"
        for name in fields
        if getattr(opportunity, name, None) in (None, "")
    }


async def advance_stage(
    session: AsyncSession,
    opportunity_id: int,
    stage_id: int,
    *,
    user_id: int | None,
    now: dt.datetime | None = None,
    probability: int | None = None,
    values: Mapping[str, Any] | None = None,
) -> Opportunity:
    """Move a deal to a stage: fill ``values``, enforce required fields, keep the history.

    The probability follows the stage unless it was overridden (passing one
    overrides it from then on).  Moving to the stage it is in only applies the
    values.
    """
    now = now or utcnow()
    opportunity = await session.get(Opportunity, opportunity_id)
    if opportunity is None or opportunity.deleted_at is not None:
        raise NotFound(f"opportunity {opportunity_id} does not exist")
    stage = await session.get(PipelineStage, stage_id)
    current = await session.get(PipelineStage, opportunity.stage_id)
    if stage is None or not stage.is_active:
        raise ValidationError({"stage_id": f"stage {stage_id} does not exist"})
    if current is not None and stage.pipeline != current.pipeline:
        raise ValidationError({"stage_id": f"stage {stage.name!r} belongs to another pipeline"})

    errors: dict[str, str] = {}
    for name, value in (values or {}).items():
        if name not in STAGE_FIELDS:
            errors[name] = "cannot be set while changing stage"
        else:
            setattr(opportunity, name, value)
    if probability is not None and not 0 <= probability <= 100:
        errors["probability"] = "must be between 0 and 100"
    errors.update(_missing(opportunity, list(stage.required_fields)))
    if errors:
        raise ValidationError(errors)

    if probability is not None:
        opportunity.probability = probability
        opportunity.probability_overridden = True
    elif not opportunity.probability_overridden:
        opportunity.probability = stage.probability

    if stage.id != opportunity.stage_id:
        open_row = await session.scalar(
            select(StageHistory)
            .where(StageHistory.opportunity_id == opportunity.id, StageHistory.left_at.is_(None))
            .order_by(StageHistory.entered_at.desc())
            .limit(1)
        )
        if open_row is not None:
            open_row.left_at = now
            open_row.left_by_id = user_id
        session.add(
            StageHistory(
                opportunity_id=opportunity.id,
                stage_id=stage.id,
                entered_at=now,
                entered_by_id=user_id,
                amount=opportunity.amount,
                probability=opportunity.probability,
            )
        )
        opportunity.stage_id = stage.id
        opportunity.closed_at = now if stage.is_closed else None
    await session.flush()
    return opportunity


async def stage_durations(
    session: AsyncSession, opportunity_id: int, now: dt.datetime | None = None
) -> list[tuple[PipelineStage, dt.timedelta]]:
    """Time spent in each stage, summed over every stay, in the order first entered."""
    now = now or utcnow()
    rows = await session.execute(
        select(StageHistory, PipelineStage)
        .join(PipelineStage, PipelineStage.id == StageHistory.stage_id)
        .where(StageHistory.opportunity_id == opportunity_id)
        .order_by(StageHistory.entered_at, StageHistory.id)
    )
    totals: dict[int, tuple[PipelineStage, dt.timedelta]] = {}
    for history, stage in rows:
        _, spent = totals.get(stage.id, (stage, dt.timedelta()))
        totals[stage.id] = (stage, spent + history.duration(now))
    return list(totals.values())
