"""The end of an event, run by the admin service every few seconds: once `ends_at` has passed, the event's sessions
stop, the temporary accounts go (their login cookies die with them, and their join codes are refused as over),
the reserved devices go back to the groups, and the organisers get the event's usage report from the accounting
ledger. Each step is in
the event's log. Idempotent: a keeper that dies half-way finishes the job at its next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aifacility.accounting.ledger import Ledger
from aifacility.events.prepull import PrePuller
from aifacility.events.store import EventStore, StoredEvent
from aifacility.facility.model import Facility
from aifacility.quotas.budgets import spent
from aifacility.quotas.reservations import QuotaStore

log = logging.getLogger("aifacility.events")
DeleteUser = Callable[[str], Awaitable[None]]
StopServer = Callable[[str, str], Awaitable[None]]


def usage_report(facility: Facility, ledger: Ledger | None, stored: StoredEvent, temporary: list[str],
                 now: datetime) -> dict[str, Any]:
    """Who took part and what they used during the window: GPU-equivalent hours and CPU core-hours per
    participant (the temporary accounts and the users the organisers named), from the ledger."""
    ev = stored.event
    end = min(ev.ends_at, now)
    people = [(u, "join code") for u in temporary] + [(u, "named") for u in ev.participants.users]
    rows: list[dict[str, Any]] = []
    if ledger is not None:
        with ledger.engine.connect() as conn:
            for user, how in people:
                used = spent(conn, "user", user, ev.starts_at, end, facility.accounting)
                rows.append({"user": user, "joined_by": how, "gpu_hours": round(used.gpu_hours, 3),
                             "cpu_core_hours": round(used.cpu_hours, 3)})
    else:
        rows = [{"user": user, "joined_by": how, "gpu_hours": None, "cpu_core_hours": None} for user, how in people]
    counted = [r for r in rows if r["gpu_hours"] is not None]
    return {
        "event": ev.name, "title": ev.title, "starts_at": ev.starts_at.isoformat(), "ends_at": ev.ends_at.isoformat(),
        "groups": ev.participants.groups, "participants": rows,
        "totals": {"participants": len(rows),
                   "gpu_hours": round(sum(r["gpu_hours"] for r in counted), 3) if counted else None,
                   "cpu_core_hours": round(sum(r["cpu_core_hours"] for r in counted), 3) if counted else None},
        "note": None if ledger is not None else
        "The facility keeps no accounting ledger, so the report lists the participants without their usage.",
    }


class EventKeeper:
    def __init__(self, facility: Facility, store: EventStore, ledger: Ledger | None, delete_user: DeleteUser,
                 clock: Callable[[], datetime], reconcile: Callable[[], Awaitable[object]] | None = None,
                 quotas: QuotaStore | None = None, stop_server: StopServer | None = None,
                 prepuller: PrePuller | None = None) -> None:
        self.facility = facility
        self.store = store
        self.ledger = ledger
        self.delete_user = delete_user
        self.clock = clock
        self.reconcile = reconcile  # the queues without the event's reservation
        self.quotas = quotas  # the spawner's reservations: which sessions the events queue pays for
        self.stop_server = stop_server
        self.prepuller = prepuller  # the events' images on their nodes before they start
        self._pulling: set[str] = set()

    async def tick(self) -> list[str]:
        """End every event whose window is over; the names of those ended in this round."""
        now = self.clock()
        ended = []
        lead = timedelta(minutes=self.facility.events.reserve_lead_minutes)
        for stored in await asyncio.to_thread(self.store.all):
            ev = stored.event
            if stored.state == "scheduled" and ev.ends_at <= now:
                await self.end(stored, now)
                ended.append(ev.name)
            elif stored.state == "scheduled" and ev.starts_at - lead <= now and ev.name not in self._pulling:
                if self.prepuller is not None and await self.prepuller.ensure(ev):
                    await asyncio.to_thread(self.store.log, ev.name, "event-keeper", "prepull",
                                            f"pre-pulling the image {ev.profile.image if ev.profile else ''} on the "
                                            "event's nodes")
                self._pulling.add(ev.name)
            elif stored.state == "cancelled" and ev.name in self._pulling:
                if self.prepuller is not None:
                    await self.prepuller.remove(ev)
                self._pulling.discard(ev.name)
        return ended

    async def end(self, stored: StoredEvent, now: datetime) -> None:
        name = stored.event.name
        temporary = await asyncio.to_thread(self.store.participants, name)
        # The report first: it reads the ledger by username, which outlives the accounts.
        report = await asyncio.to_thread(usage_report, self.facility, self.ledger, stored, temporary, now)
        stopped = 0
        queue = self.facility.events.queue
        if queue is not None and self.quotas is not None and self.stop_server is not None:
            # The event's sessions (its profile is charged to the events queue; one event runs at a time).
            for r in await asyncio.to_thread(self.quotas.reservations):
                if r.group == queue:
                    await self.stop_server(r.user, r.server)
                    stopped += 1
        if self.prepuller is not None:
            await self.prepuller.remove(stored.event)
        self._pulling.discard(name)
        gone = []
        for user in temporary:
            await self.delete_user(user)  # stops the user's servers first (the hub's own order)
            gone.append(user)
        message = (f"The event ended at {stored.event.ends_at:%Y-%m-%d %H:%M} UTC: {stopped} event session(s) "
                   f"stopped, {len(gone)} temporary account(s) removed, the usage report of "
                   f"{len(report['participants'])} participant(s) made")
        await asyncio.to_thread(self.store.finish, name, report, message)
        if self.reconcile is not None:  # the reserved devices back to the groups now, not at the next round
            await self.reconcile()
        log.info("event %s: %s", name, message)

    async def run(self, every: float) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a failed round is tried again: nothing is marked ended half-way
                log.exception("the event keeper's round failed; trying again in %.0f s", every)
            await asyncio.sleep(every)
