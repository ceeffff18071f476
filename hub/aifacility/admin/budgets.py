"""The budget keeper: every check, where each budget stands (from the accounting ledger), and what follows.

- 80%: the users concerned are told (hub home page, their sessions);
- 100%: the budget's `on_exhausted` applies. The spawner and the jobs service read the recorded state and refuse
  what it closes; the keeper itself holds queued jobs (`hold`, `stop`: a group's ClusterQueue gets
  `stopPolicy: Hold`, a user's pending Workloads `active: false`) and stops accelerator sessions once the grace
  period has passed (`stop`, through the hub's API);
- below 100% again (the budget raised or removed, the period rolled over): everything it held is released.

Every step is one row of `budget_events`, with its reason; the state is in `budget_state`, so a restarted keeper
goes on where it stopped (nothing is held twice or forgotten).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import quote

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from aifacility.accounting.ledger import Ledger
from aifacility.admin.queues import kueue_request
from aifacility.facility.model import Facility
from aifacility.jobs.manifest import USER_LABEL, user_label
from aifacility.kueue.api import JOB_UID_LABEL
from aifacility.quotas.budgets import BudgetBook, BudgetState, Spent, describe, period_start, spent, standing
from aifacility.quotas.policy import Budget, Policies
from aifacility.quotas.reservations import QuotaStore

log = logging.getLogger("aifacility.admin.budgets")
FIELD_MANAGER = "aifacility-budgets"  # who holds a queue or a Workload, in its managedFields
StopServer = Callable[[str, str], Awaitable[None]]  # (user, server name) -> stopped through the hub


class KueueHolds:
    """Holding and releasing queued work: a group's ClusterQueue, a user's pending Workloads."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace

    async def hold_queue(self, group: str, hold: bool) -> None:
        await kueue_request(self.api, "PATCH", f"/clusterqueues/{quote(group, safe='')}",
                            {"spec": {"stopPolicy": "Hold" if hold else "None"}}, FIELD_MANAGER)

    async def pending_workloads(self, user: str) -> list[str]:
        """The user's jobs' Workloads that wait for admission (an admitted job runs on: holding is for the queue)."""
        jobs = await client.BatchV1Api(self.api).list_namespaced_job(
            self.ns, label_selector=f"{USER_LABEL}={user_label(user)}", _request_timeout=30)
        uids = {j.metadata.uid for j in jobs.items if not (j.status and j.status.completion_time)}
        if not uids:
            return []
        found = await kueue_request(self.api, "GET", f"/namespaces/{self.ns}/workloads",
                                    query=[("labelSelector", f"{JOB_UID_LABEL} in ({','.join(sorted(uids))})")])
        return sorted(w["metadata"]["name"] for w in found.get("items", [])
                      if not (w.get("status") or {}).get("admission") and w["spec"].get("active", True))

    async def set_active(self, workload: str, active: bool) -> bool:
        """False when the Workload is gone (its job ended or was cancelled meanwhile)."""
        try:
            await kueue_request(self.api, "PATCH", f"/namespaces/{self.ns}/workloads/{quote(workload, safe='')}",
                                {"spec": {"active": active}}, FIELD_MANAGER)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True


class BudgetKeeper:
    def __init__(self, facility: Facility, book: BudgetBook, ledger: Ledger, snapshot: Callable[[], Policies],
                 holds: KueueHolds | None, reservations: QuotaStore | None, stop_server: StopServer) -> None:
        self.facility = facility
        self.book = book
        self.ledger = ledger
        self.snapshot = snapshot
        self.holds = holds
        self.reservations = reservations
        self.stop_server = stop_server

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # one failed check (the cluster or the hub away) must not end the keeper
                log.exception("The budget check failed; it runs again in %g s", interval)
            await asyncio.sleep(interval)

    async def check(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        policies = await asyncio.to_thread(self.snapshot)
        budgets = {("group", g): p.budget for g, p in policies.groups.items() if p.budget}
        budgets.update({("user", u): p.budget for u, p in policies.users.items() if p.budget})
        states = {(s.scope, s.name): s for s in await asyncio.to_thread(self.book.states)}
        for key, budget in budgets.items():
            await self._check_one(key[0], key[1], budget, states.get(key), now)
        for key, state in states.items():
            if key not in budgets:  # the budget was removed
                await self._release(state, now, "its budget was removed")
                await asyncio.to_thread(self.book.forget, *key)

    async def _check_one(self, scope: str, name: str, budget: Budget, state: BudgetState | None,
                         now: datetime) -> None:
        start = period_start(budget.period, now)
        used = await asyncio.to_thread(self._spent, scope, name, start, now)
        st = standing(budget, used)
        t = now.timestamp()
        if state is None:
            state = BudgetState(scope, name, start.timestamp(), "ok", t, 0.0, "", budget.on_exhausted)
        if state.level == "exhausted" and (st.level != "exhausted" or state.period_start != start.timestamp()):
            why = "the period rolled over" if state.period_start != start.timestamp() else "the budget was raised"
            await self._release(state, now, why)
        changed = st.level != state.level
        if changed:
            state.since = t
        state.period_start, state.level, state.percent = start.timestamp(), st.level, st.percent
        state.detail, state.on_exhausted, state.checked_at = st.detail, budget.on_exhausted, t
        state.stop_at = state.since + budget.grace_minutes * 60 \
            if st.level == "exhausted" and budget.on_exhausted == "stop" else None
        if changed and st.level != "ok":
            self._log(t, scope, name, st.level, describe(state, you=False))
        # The level is on record before anything is done about it, and what was done is recorded even when a
        # later step fails: the next check neither announces it again nor forgets what it holds.
        await asyncio.to_thread(self.book.save, state)
        if st.level != "exhausted":
            return
        try:
            if budget.on_exhausted in ("hold", "stop"):
                await self._hold(state, t)
            if state.stop_at is not None and t >= state.stop_at:
                await self._stop_sessions(state, t)
        finally:
            await asyncio.to_thread(self.book.save, state)

    def _spent(self, scope: str, name: str, start: datetime, now: datetime) -> Spent:
        with self.ledger.engine.connect() as conn:
            return spent(conn, scope, name, start, now, self.facility.accounting)

    def _log(self, at: float, scope: str, name: str, action: str, message: str, user: str | None = None) -> None:
        log.info("budget of %s %s: %s: %s", scope, name, action, message)
        self.book.log(at, scope, name, action, message, user)

    async def _hold(self, state: BudgetState, t: float) -> None:
        if self.holds is None:
            return
        reason = f"the budget is used up ({state.detail})"
        if state.scope == "group":
            if not state.held.get("queue") and state.name in self.facility.queues.groups:
                await self.holds.hold_queue(state.name, True)
                state.held["queue"] = state.name
                self._log(t, state.scope, state.name, "held",
                          f"Queue '{state.name}' holds the group's queued jobs: {reason}.")
            return
        held = set(state.held.get("workloads", []))
        for w in await self.holds.pending_workloads(state.name):
            if w not in held and await self.holds.set_active(w, False):
                held.add(w)
                state.held["workloads"] = sorted(held)
                self._log(t, "user", state.name, "held", f"Queued job workload {w} is held: {reason}.", state.name)

    async def _stop_sessions(self, state: BudgetState, t: float) -> None:
        if self.reservations is None:
            return
        rows = await asyncio.to_thread(self.reservations.reservations)
        stopped = set(state.held.get("stopped", []))
        for r in rows:
            ours = r.user == state.name if state.scope == "user" else r.group == state.name
            key = f"{r.user}/{r.server}"
            if ours and r.accelerator and r.units and key not in stopped:
                await self.stop_server(r.user, r.server)
                stopped.add(key)
                state.held["stopped"] = sorted(stopped)
                label = f"{r.user}/{r.server}" if r.server else f"{r.user}'s server"
                self._log(t, state.scope, state.name, "stopped",
                          f"The {r.accelerator} session {label} was stopped: the budget is used up ({state.detail}).",
                          r.user)

    async def _release(self, state: BudgetState, now: datetime, why: str) -> None:
        t = now.timestamp()
        if self.holds is not None:
            if state.held.get("queue"):
                await self.holds.hold_queue(state.held["queue"], False)
            for w in state.held.get("workloads", []):
                await self.holds.set_active(w, True)
        held = state.held.get("queue") or state.held.get("workloads")
        released = "queued jobs released; " if held else ""
        self._log(t, state.scope, state.name, "released",
                  f"Accelerators and jobs are open again ({released}{why}).")
        state.held = {}

