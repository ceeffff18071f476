"""collectors' watermarks

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collector_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("watermark", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("collector_state")
