"""GPU energy measured by DCGM, per record and device

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "measured_energy",
        sa.Column("record_id", sa.String(256), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("joules", sa.Float, nullable=False),
        sa.Column("last_mj", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("record_id", "device"),
    )


def downgrade() -> None:
    op.drop_table("measured_energy")
