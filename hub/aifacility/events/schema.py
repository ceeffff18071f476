"""The event tables (SQLAlchemy Core), in the facility's admin database beside the policies; created by its
Alembic migration 0003 (aifacility/quotas/migrations)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text

metadata = MetaData()

# One row per event: the event as its organisers wrote it (JSON), and where it is in its life.
events = Table(
    "events",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("body", Text, nullable=False),
    Column("state", String(12), nullable=False),  # scheduled | ended | cancelled
    Column("created_by", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("report", Text, nullable=True),  # JSON: the usage report made at the end
)

# One row per join code: only its hash is kept; used once, by the temporary account it created.
event_codes = Table(
    "event_codes",
    metadata,
    Column("event", String(32), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("used_by", String(64), nullable=True),
    Column("used_at", Float, nullable=True),
    PrimaryKeyConstraint("event", "idx"),
)

# What happened to each event, and who did it: shown to its organisers and the admins.
event_log = Table(
    "event_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("event", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),  # created | codes | joined | cancelled | ended
    Column("message", Text, nullable=False),
    Index("event_log_event", "event", "at"),
)
