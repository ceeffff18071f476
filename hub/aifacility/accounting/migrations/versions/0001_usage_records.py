"""the usage records table

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("resource", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("quantity", sa.Float, nullable=False),
        sa.Column("start_ts", sa.Float, nullable=False),
        sa.Column("end_ts", sa.Float, nullable=True),
        sa.Column("site", sa.String(128), nullable=False),
    )
    op.create_index("usage_records_start", "usage_records", ["start_ts"])
    op.create_index("usage_records_end", "usage_records", ["end_ts"])


def downgrade() -> None:
    op.drop_table("usage_records")
