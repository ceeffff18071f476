"""The admin service's policy logic, free of HTTP: the handlers (web pages, REST API) call it, and it calls the
store and the cluster. Writes are one at a time (one lock: the service is one process), in this order:
check → ClusterQueue → database, so that a refusal anywhere saves nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aifacility.admin.queues import QueueSync
from aifacility.facility.model import Facility, Limits
from aifacility.kueue.render import cluster_queue, group_accelerators
from aifacility.quotas.budgets import BudgetBook
from aifacility.quotas.policy import (
    NAME_PATTERN,
    GroupPolicy,
    Policies,
    PolicyError,
    Scope,
    UserPolicy,
    check,
    effective,
    known_groups,
    parse_policy,
    user_limits,
)
from aifacility.quotas.store import Change, PolicyStore


class UnknownName(PolicyError):
    """No such group or user at the hub or in the facility file."""


Exists = Callable[[Scope, str], Awaitable[bool]]  # asks the hub whether a group or user exists


def check_name(scope: Scope, name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise PolicyError(f"'{name[:60]}' is not a {scope} name (letters, digits, . _ @ -; at most 128).")
    return name


class PolicyService:
    def __init__(self, facility: Facility, store: PolicyStore, queues: QueueSync, exists: Exists, *,
                 budgets: bool = False, overlay: Callable[[Facility], Facility] | None = None) -> None:
        self.budgets = budgets  # whether a ledger is there to keep budgets with
        # What else changes the queues over the policies: the events' reservations in force now.
        self.overlay = overlay or (lambda f: f)
        self.book = BudgetBook(store.engine)
        self.facility = facility
        self.store = store
        self.queues = queues
        self.exists = exists
        self._lock = asyncio.Lock()

    async def snapshot(self) -> Policies:
        return await asyncio.to_thread(self.store.snapshot)

    async def in_force(self) -> Facility:
        return await asyncio.to_thread(self.overlay, effective(self.facility, await self.snapshot()))

    async def reconcile(self) -> list[str]:
        """Every group's ClusterQueue at the policies in force; under the lock of `set`, so that a quota read
        before a change is never written after it."""
        async with self._lock:
            facility = await self.in_force()
            return await self.queues.apply(facility, facility.queues.groups)

    async def known(self, scope: Scope, name: str) -> bool:
        if scope == "group" and name in known_groups(self.facility):
            return True
        if scope == "user" and name in self.facility.quotas.users:
            return True
        return await self.exists(scope, name)

    async def set(self, scope: Scope, name: str, body: Any, actor: str) -> Change | None:
        """Replace `name`'s policy with `body` (a JSON object; {} removes it). PolicyError, UnknownName or
        queues.QueueSyncError when refused, with nothing changed; None when it was already so."""
        check_name(scope, name)
        policy = parse_policy(scope, body)
        if not await self.known(scope, name):
            raise UnknownName(f"There is no {scope} '{name}' at the hub or in the facility file; "
                              + ("groups come from IAM at login." if scope == "group" else
                                 "a user exists once they have logged in."))
        check(self.facility, scope, name, policy)
        if policy.budget is not None and not self.budgets:
            raise PolicyError("budget: this facility keeps no accounting ledger (AIFACILITY_ACCOUNTING_DB is not set "
                              "for the hub), so budgets cannot be kept; see docs/admin/accounting.md.")
        async with self._lock:
            before = await self.snapshot()
            was, will = await asyncio.gather(
                asyncio.to_thread(self.overlay, effective(self.facility, before)),
                asyncio.to_thread(self.overlay, effective(self.facility, before.replace(scope, name, policy))))
            # Only a change of the group's ClusterQueue is written to the cluster (a budget or a spawn limit of a
            # group whose queue has quotas of its own is not).
            queued = scope == "group" and name in will.queues.groups and \
                cluster_queue(was, name) != cluster_queue(will, name)
            if queued:
                await self.queues.apply(will, [name])
            try:
                return await asyncio.to_thread(self.store.put, scope, name, policy, actor)
            except BaseException:
                if queued:  # the database refused: the queue goes back to what is in force
                    await self.queues.apply(was, [name])
                raise

    # --- what the pages and the API show --------------------------------------------------------------------

    def view(self, scope: Scope, name: str, policies: Policies) -> dict[str, Any]:
        """A group's or user's policy, the facility file's values and the values in force."""
        policy = policies.get(scope, name)
        f = self.facility
        out: dict[str, Any] = {"scope": scope, "name": name,
                               "policy": policy.model_dump(exclude_defaults=True) if policy else {}}
        if scope == "user":
            out["file"] = _limits(f.quotas.users.get(name, f.quotas.default_user))
            out["in_force"] = _limits(user_limits(f, policies, name))
            return out
        now = effective(f, policies)
        out["file"] = _group(f, name)
        out["in_force"] = _group(now, name)
        return out

    async def overview(self) -> dict[str, Any]:
        policies = await self.snapshot()
        groups = sorted(known_groups(self.facility) | set(policies.groups))
        users = sorted(set(policies.users) | set(self.facility.quotas.users))
        return {"groups": [self.view("group", g, policies) for g in groups],
                "users": [self.view("user", u, policies) for u in users],
                "default_user": _limits(self.facility.quotas.default_user)}

    async def audit(self, limit: int, scope: str | None = None, name: str | None = None) -> list[Change]:
        return await asyncio.to_thread(self.store.audit, limit, scope, name)

    async def budget_report(self, limit: int = 50) -> dict[str, Any]:
        """Where every budget stood at the keeper's last check, and its latest steps."""
        states = await asyncio.to_thread(self.book.states)
        events = await asyncio.to_thread(self.book.events, limit)
        return {"enabled": self.budgets,
                "states": [{"scope": s.scope, "name": s.name, "level": s.level, "percent": round(s.percent, 1),
                            "detail": s.detail, "on_exhausted": s.on_exhausted, "held": s.held, "since": s.since,
                            "checked_at": s.checked_at} for s in sorted(states, key=lambda s: (s.scope, s.name))],
                "events": [e.as_json() for e in events]}


def _limits(lim: Limits | None) -> dict[str, Any]:
    if lim is None:
        return {"servers": None, "accelerators": {}}
    return {"servers": lim.servers, "accelerators": dict(lim.accelerators)}


def _group(f: Facility, name: str) -> dict[str, Any]:
    out = _limits(f.quotas.groups.get(name))
    gq = f.queues.groups.get(name) if f.queues.enabled else None
    out["queue"] = None if gq is None else {
        "accelerators": group_accelerators(f, name), "cpu": gq.cpu, "memory": gq.memory, "borrowing": gq.borrowing}
    return out


__all__ = ["GroupPolicy", "PolicyError", "PolicyService", "UnknownName", "UserPolicy", "check_name"]
