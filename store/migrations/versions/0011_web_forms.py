"""web forms: a company site's lead form, its hashed key, owner, allowed origins, thank-you page

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAMP = store.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_forms",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("owner_id", BIGID, nullable=True),
        sa.Column("allowed_origins", sa.JSON(), nullable=False),
        sa.Column("thank_you_url", sa.String(length=500), nullable=True),
        sa.Column("last_used_at", STAMP, nullable=True),
        sa.Column("revoked_at", STAMP, nullable=True),
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("updated_at", STAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_web_forms_owner_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_forms")),
        sa.UniqueConstraint("name", name=op.f("uq_web_forms_name")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_web_forms_key_sha256")),
    )


def downgrade() -> None:
    op.drop_table("web_forms")
