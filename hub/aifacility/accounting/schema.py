"""The ledger's table (SQLAlchemy Core). Times are UTC epoch seconds: the reports' overlap arithmetic is then the
same portable SQL on SQLite and PostgreSQL. Changes to it go through an Alembic migration (`migrations/`)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table

metadata = MetaData()

usage = Table(
    "usage_records",
    metadata,
    Column("id", String(256), primary_key=True),  # unique per source: re-sending a record changes nothing
    Column("user_name", String(128), nullable=False),
    Column("group_name", String(128), nullable=False),  # frozen at the start of the usage
    Column("kind", String(16), nullable=False),
    Column("resource", String(16), nullable=False),
    Column("model", String(128), nullable=False, default=""),
    Column("quantity", Float, nullable=False),
    Column("start_ts", Float, nullable=False),
    Column("end_ts", Float, nullable=True),  # NULL while the usage goes on
    Column("site", String(128), nullable=False),
    Index("usage_records_start", "start_ts"),
    Index("usage_records_end", "end_ts"),
)

# Per collector, the last time it saw the world whole: usage that vanished since is closed at that time.
collector_state = Table(
    "collector_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("watermark", Float, nullable=False),
)

# Per UTC day, the unit-seconds of closed records and how many started that day (see rollup.py).
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", Float, nullable=False),
    Column("user_name", String(128), nullable=False),
    Column("group_name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("resource", String(16), nullable=False),
    Column("model", String(128), nullable=False),
    Column("site", String(128), nullable=False),
    Column("unit_seconds", Float, nullable=False),
    Column("started", Integer, nullable=False),
    PrimaryKeyConstraint("day", "user_name", "group_name", "kind", "resource", "model", "site"),
)
