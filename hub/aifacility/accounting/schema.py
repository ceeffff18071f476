"""The ledger's table (SQLAlchemy Core). Times are UTC epoch seconds: the reports' overlap arithmetic is then the
same portable SQL on SQLite and PostgreSQL. Changes to it go through an Alembic migration (`migrations/`)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, text

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
    Index("usage_records_open", "start_ts", sqlite_where=text("end_ts IS NULL"),
          postgresql_where=text("end_ts IS NULL")),
)

# Per collector, the last time it saw the world whole: usage that vanished since is closed at that time.
collector_state = Table(
    "collector_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("watermark", Float, nullable=False),
)

# GPU energy measured by DCGM (`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`, a counter in mJ per device) while a record
# was open: what it added since the first sample the collector took of that record's device (see dcgm.py).
measured_energy = Table(
    "measured_energy",
    metadata,
    Column("record_id", String(256), nullable=False),
    Column("device", String(128), nullable=False),  # the GPU's UUID
    Column("joules", Float, nullable=False),
    Column("last_mj", Float, nullable=False),  # the counter at the last sample
    PrimaryKeyConstraint("record_id", "device"),
)

def _rollup(name: str) -> Table:
    """A roll-up: per period (UTC day or month) and key, the closed records' unit-seconds and how many started in
    it (see rollup.py)."""
    return Table(
        name,
        metadata,
        Column("period", Float, nullable=False),  # the period's start, epoch seconds
        Column("user_name", String(128), nullable=False),
        Column("group_name", String(128), nullable=False),
        Column("resource", String(16), nullable=False),
        Column("model", String(128), nullable=False),
        Column("site", String(128), nullable=False),
        Column("unit_seconds", Float, nullable=False),
        Column("started", Integer, nullable=False),
        PrimaryKeyConstraint("period", "user_name", "group_name", "resource", "model", "site"),
    )


usage_daily = _rollup("usage_daily")
usage_monthly = _rollup("usage_monthly")
