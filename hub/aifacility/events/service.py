"""The admin service's events, free of HTTP (handlers call it; tests too): who may see and change which event,
and every check before anything is saved. Organisers see and change their own events; admins all of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aifacility.events.model import MAX_CODES, Event, EventError, check, parse_event
from aifacility.events.store import EventStore, StoredEvent
from aifacility.facility.model import Facility

log = logging.getLogger("aifacility.events")


class NotYours(PermissionError):
    """The event is someone else's: its organisers and the admins only."""


class UnknownEvent(LookupError):
    pass


class EventService:
    def __init__(self, facility: Facility, store: EventStore,
                 on_change: Callable[[], Awaitable[object]] | None = None) -> None:
        self.facility = facility
        self.store = store
        self.on_change = on_change  # brings the queues to the reservations in force (the admin service's)
        self._lock = asyncio.Lock()  # one check-then-save at a time: two overlapping events cannot both pass

    async def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change()
        except Exception as e:  # saved already; the admin service's next reconciliation writes the queues
            log.warning("the queues did not follow an event change at once (%s); the next round will", e)

    def _mine(self, stored: StoredEvent, me: str, admin: bool) -> bool:
        return admin or me in stored.event.organisers

    async def visible(self, me: str, admin: bool, now: datetime) -> list[dict[str, Any]]:
        return [s.as_json(now) for s in await asyncio.to_thread(self.store.all) if self._mine(s, me, admin)]

    async def one(self, name: str, me: str, admin: bool, now: datetime) -> dict[str, Any]:
        stored = await self._get(name, me, admin)
        return {**stored.as_json(now), "participants_joined": await asyncio.to_thread(self.store.participants, name),
                "log": await asyncio.to_thread(self.store.history, name)}

    async def _get(self, name: str, me: str, admin: bool) -> StoredEvent:
        stored = await asyncio.to_thread(self.store.get, name)
        if stored is None:
            raise UnknownEvent(f"There is no event named '{name}'.")
        if not self._mine(stored, me, admin):
            raise NotYours(f"'{name}' is not one of your events: its organisers and the facility's administrators "
                           "may see and change it.")
        return stored

    async def create(self, body: Any, me: str, now: datetime) -> tuple[Event, list[str]]:
        event = parse_event(body, me)
        async with self._lock:
            live = [s.event for s in await asyncio.to_thread(self.store.all) if s.state == "scheduled"]
            named = [s.event for s in await asyncio.to_thread(self.store.all) if s.event.name == event.name]
            check(self.facility, event, {e.name: e for e in [*live, *named]}.values(), now)
            codes = await asyncio.to_thread(self.store.create, event, me)
        await self._changed()
        return event, codes

    async def add_codes(self, name: str, body: Any, me: str, admin: bool, now: datetime) -> list[str]:
        stored = await self._get(name, me, admin)
        count = body.get("count") if isinstance(body, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CODES:
            raise EventError(f'count must be a whole number from 1 to {MAX_CODES}, e.g. {{"count": 10}}.')
        if stored.codes + count > MAX_CODES:
            raise EventError(f"'{name}' has {stored.codes} join codes; at most {MAX_CODES} per event.")
        if stored.phase(now) not in ("scheduled", "running"):
            raise EventError(f"'{name}' is {stored.phase(now)}: it needs no more join codes.")
        return await asyncio.to_thread(self.store.add_codes, name, count, me)

    async def cancel(self, name: str, me: str, admin: bool, now: datetime) -> None:
        stored = await self._get(name, me, admin)
        if stored.phase(now) != "scheduled":
            raise EventError(f"'{name}' is {stored.phase(now)}: only an event that has not started can be "
                             f"cancelled (a running one ends at {stored.event.ends_at:%Y-%m-%d %H:%M} UTC).")
        await asyncio.to_thread(self.store.cancel, name, me)
        await self._changed()
