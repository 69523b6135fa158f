"""activities: reminders (minutes before, when due, when mailed) and repetition (rule, series)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAMP = store.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("remind_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("remind_at", STAMP, nullable=True))
        batch_op.add_column(sa.Column("reminder_sent_at", STAMP, nullable=True))
        batch_op.add_column(sa.Column("recurrence", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("series_id", BIGID, nullable=True))
        batch_op.add_column(
            sa.Column("series_index", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("series_start", STAMP, nullable=True))
        batch_op.create_index(batch_op.f("ix_activities_remind_at"), ["remind_at"], unique=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_activities_series_id_series_index"), ["series_id", "series_index"]
        )


def downgrade() -> None:
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_activities_series_id_series_index"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_activities_remind_at"))
        batch_op.drop_column("series_start")
        batch_op.drop_column("series_index")
        batch_op.drop_column("series_id")
        batch_op.drop_column("recurrence")
        batch_op.drop_column("reminder_sent_at")
        batch_op.drop_column("remind_at")
        batch_op.drop_column("remind_minutes")
