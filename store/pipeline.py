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
from store.records import acting_as

DEFAULT_PIPELINE = "default"
# Fields a stage may require and a caller may set while advancing.
STAGE_FIELDS = frozenset(
    {"amount", "currency", "expected_close", "next_step", "contact_id", "account_id", "lost_reason"}
)
REQUIRED = "is required to enter this stage"


def missing_fields(stage: PipelineStage, value_of: Mapping[str, Any]) -> dict[str, str]:
    """The stage's required fields that are empty in ``value_of``, each with its message."""
    return {name: REQUIRED for name in stage.required_fields if value_of.get(name) in (None, "")}


async def first_open_stage(
    session: AsyncSession, pipeline: str = DEFAULT_PIPELINE
) -> PipelineStage:
    """The pipeline's first active stage that is neither won nor lost, by position."""
    stage = await session.scalar(
        select(PipelineStage)
        .where(
            PipelineStage.pipeline == pipeline,
            PipelineStage.is_active.is_(True),
            PipelineStage.is_won.is_(False),
            PipelineStage.is_lost.is_(False),
        )
        .order_by(PipelineStage.position, PipelineStage.id)
        .limit(1)
    )
    if stage is None:
        raise ValidationError({"stage_id": f"pipeline {pipeline!r} has no open stage"})
    return stage


async def active_stage(session: AsyncSession, stage_id: int) -> PipelineStage:
    stage = await session.get(PipelineStage, stage_id)
    if stage is None or not stage.is_active:
        raise ValidationError({"stage_id": f"stage {stage_id} does not exist"})
    return stage


def enter_stage(
    session: AsyncSession,
    opportunity: Opportunity,
    stage: PipelineStage,
    *,
    user_id: int | None,
    now: dt.datetime,
) -> None:
    """Put the deal in ``stage`` and open its history row (the caller closed the last one)."""
    opportunity.stage_id = stage.id
    opportunity.closed_at = now if stage.is_closed else None
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
    values.  A refused move changes nothing, not even the values.
    """
    now = now or utcnow()
    # Locked, so two people moving the same deal cannot both close its open history row.
    opportunity = await session.get(
        Opportunity, opportunity_id, with_for_update=True, populate_existing=True
    )
    if opportunity is None or opportunity.deleted_at is not None:
        raise NotFound(f"opportunity {opportunity_id} does not exist")
    stage = await active_stage(session, stage_id)
    current = await session.get(PipelineStage, opportunity.stage_id)
    if current is not None and stage.pipeline != current.pipeline:
        raise ValidationError({"stage_id": f"stage {stage.name!r} belongs to another pipeline"})

    updates = dict(values or {})
    errors = {
        name: "cannot be set while changing stage" for name in updates if name not in STAGE_FIELDS
    }
    if probability is not None and not 0 <= probability <= 100:
        errors["probability"] = "must be between 0 and 100"
    after = {
        name: updates[name] if name in updates else getattr(opportunity, name, None)
        for name in STAGE_FIELDS | set(stage.required_fields)
    }
    errors.update(missing_fields(stage, after))
    if errors:
        raise ValidationError(errors)

    with acting_as(session, user_id):
        for name, value in updates.items():
            setattr(opportunity, name, value)
        if probability is not None:
            opportunity.probability = probability
            opportunity.probability_overridden = True
        elif not opportunity.probability_overridden:
            opportunity.probability = stage.probability

        if stage.id != opportunity.stage_id:
            open_rows = await session.scalars(
                select(StageHistory).where(
                    StageHistory.opportunity_id == opportunity.id, StageHistory.left_at.is_(None)
                )
            )
            for row in open_rows:
                row.left_at = now
                row.left_by_id = user_id
            enter_stage(session, opportunity, stage, user_id=user_id, now=now)
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
