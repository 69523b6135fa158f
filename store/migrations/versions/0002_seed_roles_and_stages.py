"""Seed the default roles and the default sales pipeline.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CRM = ["leads", "contacts", "accounts", "opportunities", "activities", "emails", "calls"]
ALL_ACTIONS = ["view", "create", "edit", "delete", "export"]

ROLES = [
    {
        "name": "admin",
        "description": "Everything, including administration",
        "is_admin": True,
        "scope": "all",
        "permissions": {},
        "can_dial": True,
    },
    {
        "name": "manager",
        "description": "Runs a team: sees and changes its records, exports",
        "is_admin": False,
        "scope": "team",
        "permissions": {m: ALL_ACTIONS for m in [*CRM, "campaigns", "reports"]},
        "can_dial": True,
    },
    {
        "name": "agent",
        "description": "Works their own records and calls",
        "is_admin": False,
        "scope": "own",
        "permissions": {m: ["view", "create", "edit"] for m in CRM},
        "can_dial": True,
    },
]

# (name, probability, won, lost, fields required to enter)
STAGES = [
    ("Prospecting", 10, False, False, []),
    ("Qualification", 20, False, False, []),
    ("Needs analysis", 40, False, False, []),
    ("Proposal", 60, False, False, ["amount", "expected_close"]),
    ("Negotiation", 80, False, False, ["amount", "expected_close"]),
    ("Closed won", 100, True, False, ["amount"]),
    ("Closed lost", 0, False, True, []),
]


def _tables() -> tuple[sa.Table, sa.Table]:
    meta = sa.MetaData()
    roles = sa.Table(
        "roles",
        meta,
        sa.Column("name", sa.String),
        sa.Column("description", sa.String),
        sa.Column("is_admin", sa.Boolean),
        sa.Column("scope", sa.String),
        sa.Column("permissions", sa.JSON),
        sa.Column("can_dial", sa.Boolean),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    stages = sa.Table(
        "pipeline_stages",
        meta,
        sa.Column("pipeline", sa.String),
        sa.Column("name", sa.String),
        sa.Column("position", sa.Integer),
        sa.Column("probability", sa.Integer),
        sa.Column("is_won", sa.Boolean),
        sa.Column("is_lost", sa.Boolean),
        sa.Column("is_active", sa.Boolean),
        sa.Column("required_fields", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    return roles, stages


def upgrade() -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    roles, stages = _tables()
    op.bulk_insert(roles, [{**r, "created_at": now, "updated_at": now} for r in ROLES])
    op.bulk_insert(
        stages,
        [
            {
                "pipeline": "default",
                "name": name,
                "position": pos,
                "probability": prob,
                "is_won": won,
                "is_lost": lost,
                "is_active": True,
                "required_fields": req,
                "created_at": now,
                "updated_at": now,
            }
            for pos, (name, prob, won, lost, req) in enumerate(STAGES, start=1)
        ],
    )


def downgrade() -> None:
    roles, stages = _tables()
    op.execute(stages.delete().where(stages.c.pipeline == "default"))
    op.execute(roles.delete().where(roles.c.name.in_([r["name"] for r in ROLES])))
