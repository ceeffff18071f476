"""daily roll-up of closed usage

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_KEY = ["day", "user_name", "group_name", "kind", "resource", "model", "site"]


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Float, nullable=False),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("resource", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("unit_seconds", sa.Float, nullable=False),
        sa.Column("started", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(*_KEY),
    )
    # Records closed before the roll-up existed.
    from aifacility.accounting import rollup

    conn = op.get_bind()
    totals: rollup.Totals = {}
    for row in conn.execute(sa.text("SELECT * FROM usage_records WHERE end_ts IS NOT NULL")):
        rollup.add(totals, row._mapping, float(row.end_ts))
    rollup.upsert(conn, totals)


def downgrade() -> None:
    op.drop_table("usage_daily")
