"""record lists: creation time indexed on accounts, contacts, leads, opportunities

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 13:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("accounts", "contacts", "leads", "opportunities")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_created_at", table, ["created_at"], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_created_at", table_name=table)
