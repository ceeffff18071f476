"""The policies in force and their audit trail, in the facility's database (SQLite file or PostgreSQL URL).

Readers (the spawner at every spawn, the jobs service at every submission) take a `snapshot()`: one SELECT of a
table with a row per group or user that has a policy. Writers (the admin service) `put` a policy: the new row
and its audit row commit in one transaction, or neither does.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, select, update

from aifacility.database import open_database
from aifacility.quotas.policy import GroupPolicy, Policies, Scope, UserPolicy
from aifacility.quotas.schema import policies, policy_audit

MIGRATIONS = Path(__file__).parent / "migrations"
DB_ENV = "AIFACILITY_POLICY_DB"


def default_url(data_dir: str | os.PathLike[str] | None = None) -> str:
    """`$AIFACILITY_POLICY_DB`, else a SQLite file in the hub's data directory."""
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    data = Path(data_dir or os.environ.get("AIFACILITY_HUB_DATA", "/srv/jupyterhub"))
    return f"sqlite:///{data / 'aifacility-policies.sqlite'}"


@dataclass(frozen=True)
class Change:
    """One row of the audit trail. `before`/`after` are the policy as stored (None: no policy)."""

    id: int
    at: float
    actor: str
    scope: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "actor": self.actor, "scope": self.scope, "name": self.name,
                "before": self.before, "after": self.after}


def _body(policy: GroupPolicy | UserPolicy | None) -> str | None:
    if policy is None or policy.is_empty():
        return None
    return json.dumps(policy.model_dump(exclude_defaults=True), sort_keys=True)


def _loads(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))


class PolicyStore:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine: Engine = open_database(self.url, "the policy database", MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    def snapshot(self) -> Policies:
        with self.engine.connect() as conn:
            rows = conn.execute(select(policies.c.scope, policies.c.name, policies.c.body)).all()
        groups = {r.name: GroupPolicy.model_validate_json(r.body) for r in rows if r.scope == "group"}
        users = {r.name: UserPolicy.model_validate_json(r.body) for r in rows if r.scope == "user"}
        return Policies(groups, users)

    def put(self, scope: Scope, name: str, policy: GroupPolicy | UserPolicy | None, actor: str) -> Change | None:
        """Replace `name`'s policy (None or empty: remove it) and record the change; None when nothing changed."""
        after = _body(policy)
        now = time.time()
        with self.engine.begin() as conn:
            key = (policies.c.scope == scope) & (policies.c.name == name)
            before = conn.execute(select(policies.c.body).where(key)).scalar()
            if before == after:
                return None
            if after is None:
                conn.execute(delete(policies).where(key))
            elif before is None:
                conn.execute(policies.insert().values(scope=scope, name=name, body=after, updated_at=now,
                                                      updated_by=actor))
            else:
                conn.execute(update(policies).where(key).values(body=after, updated_at=now, updated_by=actor))
            row = conn.execute(policy_audit.insert().values(at=now, actor=actor, scope=scope, name=name,
                                                            before=before, after=after))
            (change_id,) = row.inserted_primary_key or (0,)
        return Change(int(change_id), now, actor, scope, name, _loads(before), _loads(after))

    def audit(self, limit: int = 100, scope: str | None = None, name: str | None = None) -> list[Change]:
        """The latest changes first."""
        q = select(policy_audit).order_by(policy_audit.c.id.desc()).limit(limit)
        if scope is not None:
            q = q.where(policy_audit.c.scope == scope)
        if name is not None:
            q = q.where(policy_audit.c.name == name)
        with self.engine.connect() as conn:
            return [Change(r.id, r.at, r.actor, r.scope, r.name, _loads(r.before), _loads(r.after))
                    for r in conn.execute(q)]


_STORES: dict[str, PolicyStore] = {}


def policy_store(url: str) -> PolicyStore:
    """One store (one engine, one connection pool) per URL per process."""
    store = _STORES.get(url)
    if store is None:
        store = _STORES[url] = PolicyStore(url)
    return store
