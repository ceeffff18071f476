"""The policy tables (SQLAlchemy Core). Changes go through an Alembic migration (`migrations/`)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text

VERSION_TABLE = "aifacility_policies_version"
metadata = MetaData()

# One row per group or user with a policy: the policy as JSON (only the fields it sets).
policies = Table(
    "policies",
    metadata,
    Column("scope", String(8), nullable=False),  # group | user
    Column("name", String(128), nullable=False),
    Column("body", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(128), nullable=False),
    PrimaryKeyConstraint("scope", "name"),
)

# Who changed what, when, from what to what: one row per change, never updated or deleted.
policy_audit = Table(
    "policy_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("scope", String(8), nullable=False),
    Column("name", String(128), nullable=False),
    Column("before", Text, nullable=True),  # NULL: no policy before (the facility file's values)
    Column("after", Text, nullable=True),  # NULL: the policy was removed
)

# Per group or user with a budget: where it stood at the last check, and what the keeper did about it.
budget_state = Table(
    "budget_state",
    metadata,
    Column("scope", String(8), nullable=False),
    Column("name", String(128), nullable=False),
    Column("period_start", Float, nullable=False),
    Column("level", String(16), nullable=False),  # ok | warned | exhausted
    Column("since", Float, nullable=False),  # when it reached this level
    Column("percent", Float, nullable=False),
    Column("detail", Text, nullable=False),  # "12.5 of 10 GPU-hours this month", for people
    Column("on_exhausted", String(16), nullable=False),
    Column("held", Text, nullable=False),  # JSON: what the keeper holds (ClusterQueue, Workload names)
    Column("stop_at", Float, nullable=True),  # `stop`: when accelerator sessions are stopped (since + grace)
    Column("checked_at", Float, nullable=False),
    PrimaryKeyConstraint("scope", "name"),
)

# Every step the budget keeper takes, with its reason: shown to the users concerned and to admins.
budget_events = Table(
    "budget_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("scope", String(8), nullable=False),
    Column("name", String(128), nullable=False),
    Column("user_name", String(128), nullable=True),  # the user a step concerned (a stopped session's owner)
    Column("action", String(32), nullable=False),  # warned | exhausted | held | stopped | released
    Column("message", Text, nullable=False),
    Index("budget_events_at", "at"),
)
