"""Stage advance on both engines: required fields, probability, history and durations."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.errors import NotFound, ValidationError
from store.models import AuditEntry, Opportunity, PipelineStage, StageHistory, User
from store.pipeline import advance_stage, stage_durations

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@dataclass
class Pipeline:
    qualification: PipelineStage
    proposal: PipelineStage
    won: PipelineStage
    lost: PipelineStage
    elsewhere: PipelineStage


async def _pipeline(session: AsyncSession) -> Pipeline:
    def stage(name: str, position: int, probability: int, **fields: object) -> PipelineStage:
        return PipelineStage(
            pipeline="test", name=name, position=position, probability=probability, **fields
        )

    stages = Pipeline(
        qualification=stage("Qualification", 1, 20),
        proposal=stage("Proposal", 2, 60, required_fields=["amount", "expected_close"]),
        won=stage("Won", 3, 100, is_won=True, required_fields=["amount"]),
        lost=stage("Lost", 4, 0, is_lost=True),
        elsewhere=PipelineStage(pipeline="service", name="Renewal", probability=50),
    )
    session.add_all(vars(stages).values())
    await session.flush()
    return stages


async def _deal(session: AsyncSession, stage: PipelineStage, **fields: object) -> Opportunity:
    deal = Opportunity(name="ERP", stage_id=stage.id, probability=stage.probability, **fields)
    session.add(deal)
    await session.flush()
    session.add(StageHistory(opportunity_id=deal.id, stage_id=stage.id, entered_at=T0))
    await session.flush()
    return deal


async def _history(session: AsyncSession, deal: Opportunity) -> list[tuple[object, ...]]:
    rows = await session.scalars(
        select(StageHistory)
        .where(StageHistory.opportunity_id == deal.id)
        .order_by(StageHistory.entered_at, StageHistory.id)
    )
    return [(h.stage_id, h.entered_at, h.left_at, h.entered_by_id, h.left_by_id) for h in rows]


async def test_a_refused_move_lists_every_problem_and_changes_nothing(
    session: AsyncSession,
) -> None:
    stages = await _pipeline(session)
    deal = await _deal(session, stages.qualification)
    before = await _history(session, deal)

    refusals: list[tuple[dict[str, object], set[str]]] = [
        ({"values": {"next_step": "send quote"}}, {"amount", "expected_close"}),
        ({"values": {"amount": Decimal(100)}}, {"expected_close"}),
        ({"values": {"amount": "", "expected_close": dt.date(2027, 1, 1)}}, {"amount"}),
        ({"values": {"name": "renamed"}}, {"name", "amount", "expected_close"}),
        ({"probability": 150}, {"probability", "amount", "expected_close"}),
    ]
    for options, fields in refusals:
        with pytest.raises(ValidationError) as err:
            await advance_stage(
                session, deal.id, stages.proposal.id, user_id=None, now=T0 + DAY, **options
            )  # type: ignore[arg-type]
        assert set(err.value.errors) == fields
    with pytest.raises(ValidationError) as err:
        await advance_stage(session, deal.id, stages.elsewhere.id, user_id=None)
    assert set(err.value.errors) == {"stage_id"}
    with pytest.raises(NotFound):
        await advance_stage(session, 999_999, stages.proposal.id, user_id=None)

    assert (deal.stage_id, deal.probability, deal.amount, deal.next_step, deal.name) == (
        stages.qualification.id,
        20,
        None,
        None,
        "ERP",
    )
    assert await _history(session, deal) == before


async def test_history_probability_and_closing(session: AsyncSession) -> None:
    stages = await _pipeline(session)
    user = User(username="zhou")
    session.add(user)
    await session.flush()
    deal = await _deal(session, stages.qualification)
    follower = await _deal(session, stages.qualification, amount=Decimal(10))

    async def move(stage: PipelineStage, at: dt.datetime, **options: object) -> None:
        await advance_stage(session, deal.id, stage.id, user_id=user.id, now=at, **options)  # type: ignore[arg-type]

    await move(
        stages.proposal,
        T0 + 2 * DAY,
        values={"amount": Decimal("50000"), "expected_close": dt.date(2026, 12, 31)},
    )
    assert (deal.stage_id, deal.probability, deal.amount) == (
        stages.proposal.id,
        60,
        Decimal("50000"),
    )
    # The same stage again: values apply, the history does not move.
    await move(stages.proposal, T0 + 3 * DAY, values={"next_step": "demo"})
    assert deal.next_step == "demo"
    assert await _history(session, deal) == [
        (stages.qualification.id, T0, T0 + 2 * DAY, None, user.id),
        (stages.proposal.id, T0 + 2 * DAY, None, user.id, None),
    ]

    # A probability given by hand overrides the stages' from then on.
    await move(stages.proposal, T0 + 3 * DAY, probability=75)
    assert (deal.probability, deal.probability_overridden) == (75, True)
    await move(stages.qualification, T0 + 4 * DAY)
    assert deal.probability == 75
    # Losing closes the deal, reopening clears it, winning closes it again.
    await move(stages.lost, T0 + 5 * DAY, values={"lost_reason": "price"})
    assert deal.closed_at == T0 + 5 * DAY
    await move(stages.proposal, T0 + 6 * DAY)
    assert deal.closed_at is None
    await move(stages.won, T0 + 7 * DAY)
    assert (deal.closed_at, deal.probability) == (T0 + 7 * DAY, 75)

    # Without an override the probability follows each stage.
    for stage in (stages.won, stages.lost, stages.qualification):
        await advance_stage(session, follower.id, stage.id, user_id=None, now=T0 + DAY)
        assert follower.probability == stage.probability

    history = await _history(session, deal)
    assert [row[0] for row in history] == [
        stages.qualification.id,
        stages.proposal.id,
        stages.qualification.id,
        stages.lost.id,
        stages.proposal.id,
        stages.won.id,
    ]
    assert sum(1 for row in history if row[2] is None) == 1  # one open stay at a time
    durations = [
        (stage.name, spent)
        for stage, spent in await stage_durations(session, deal.id, T0 + 8 * DAY)
    ]
    assert durations == [
        ("Qualification", 2 * DAY + DAY),
        ("Proposal", 2 * DAY + DAY),
        ("Lost", DAY),
        ("Won", DAY),
    ]
    stage_changes = await session.scalars(
        select(AuditEntry.user_id).where(
            AuditEntry.record_type == "opportunity",
            AuditEntry.record_id == deal.id,
            AuditEntry.field == "stage_id",
        )
    )
    assert list(stage_changes) == [user.id] * 5
