"""roll-ups of closed usage by day and by month

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


def _rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("period", sa.Float, nullable=False),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("resource", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("unit_seconds", sa.Float, nullable=False),
        sa.Column("started", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("period", "user_name", "group_name", "resource", "model", "site"),
    )


def upgrade() -> None:
    _rollup("usage_daily")
    _rollup("usage_monthly")
    # The open records, read by every report and the metrics: a partial index keeps that a small read.
    op.create_index("usage_records_open", "usage_records", ["start_ts"], sqlite_where=sa.text("end_ts IS NULL"),
                    postgresql_where=sa.text("end_ts IS NULL"))
    # Records closed before the roll-ups existed.
    from aifacility.accounting import rollup

    conn = op.get_bind()
    totals = rollup.Totals()
    for row in conn.execute(sa.text("SELECT * FROM usage_records WHERE end_ts IS NOT NULL")):
        totals.add(row._mapping, float(row.end_ts))
    totals.upsert(conn)


def downgrade() -> None:
    op.drop_index("usage_records_open", "usage_records")
    op.drop_table("usage_monthly")
    op.drop_table("usage_daily")
