"""The policy tables (SQLAlchemy Core). Changes go through an Alembic migration (`migrations/`)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text

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
