"""budget state and the budget keeper's steps

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
        "budget_state",
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("period_start", sa.Float, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("on_exhausted", sa.String(16), nullable=False),
        sa.Column("held", sa.Text, nullable=False),
        sa.Column("stop_at", sa.Float, nullable=True),
        sa.Column("checked_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("scope", "name"),
    )
    op.create_table(
        "budget_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("user_name", sa.String(128), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("budget_events_at", "budget_events", ["at"])


def downgrade() -> None:
    op.drop_table("budget_events")
    op.drop_table("budget_state")
