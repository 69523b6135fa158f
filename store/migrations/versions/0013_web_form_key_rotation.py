"""web forms: when the current key was made and its last characters (revoke and rotate)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAMP = store.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("web_forms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_made_at", STAMP, nullable=True))
        batch_op.add_column(sa.Column("key_hint", sa.String(length=8), nullable=True))
    # A form made before this has had one key, made with it.
    op.execute("UPDATE web_forms SET key_made_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("web_forms", schema=None) as batch_op:
        batch_op.drop_column("key_hint")
        batch_op.drop_column("key_made_at")
