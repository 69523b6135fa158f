"""record lists: change time indexed on the four record tables; every name a search matches

Lists sort by last change and opportunities by name; without an index each
such page sorted the whole table (78 ms at 100,000 contacts, growing with it).
A search matches a prefix of any of a module's names (contacts: last or first
name; leads: last name or company); one unindexed name made it read every row.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 14:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("accounts", "contacts", "leads", "opportunities")
NAMES = (("opportunities", "name"), ("contacts", "first_name"), ("leads", "company"))


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_updated_at", table, ["updated_at"], unique=False)
    for table, column in NAMES:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def downgrade() -> None:
    for table, column in NAMES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
    for table in TABLES:
        op.drop_index(f"ix_{table}_updated_at", table_name=table)
