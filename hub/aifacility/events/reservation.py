"""What events change in the facility while they are on, as a layer over the facility (and its policies):

- from `reserve_lead_minutes` before the start to the end, a reserving event's devices are in the events
  queue's nominal quota (`facility.events.queue`), taken from the groups that hold that accelerator (largest
  quota first); that queue lends none of them, so a non-participant's session waits in its own queue. Outside the
  window the devices are back with the groups, who share them through the cohort as always;
- from the start to the end, the event's profile is on the spawn form of its participants (their sessions are
  charged to the events queue), opening on an nbgitpuller link when the event has teaching material.

Applied where the action happens: the admin service's ClusterQueues (PolicyService's overlay) and each spawn.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from urllib.parse import urlencode

from aifacility.events.model import Event, lendable
from aifacility.events.store import EventStore, StoredEvent
from aifacility.facility.model import AcceleratorRequest, Facility, Profile
from aifacility.kueue.render import group_accelerators


def profile_name(event: Event) -> str:
    return f"event-{event.name}"


def pull_url(event: Event) -> str | None:
    """The session's start page: nbgitpuller's link, which pulls the material into the home, then opens it."""
    m = event.material
    if m is None:
        return None
    return "/git-pull?" + urlencode({"repo": m.repo, "branch": m.branch, "targetpath": m.directory,
                                     "urlpath": f"lab/tree/{m.directory}"})


def event_profile(facility: Facility, event: Event) -> Profile | None:
    p = event.profile
    if p is None or facility.events.queue is None:
        return None
    accel = None
    if event.reservation is not None and p.accelerator:
        accel = AcceleratorRequest(name=event.reservation.accelerator, count=1)
    hours = max(1.0, min(12.0, (event.ends_at - event.starts_at).total_seconds() / 3600))
    return Profile(name=profile_name(event), display_name=f"{event.title} (event)",
                   description=f"For the participants of {event.title}, until {event.ends_at:%Y-%m-%d %H:%M} UTC.",
                   images=[p.image], cpu=p.cpu, memory=p.memory, accelerator=accel, groups=[facility.events.queue],
                   queueable=True, lifetime_hours=hours, max_lifetime_hours=max(hours, 12.0),
                   default_url=pull_url(event))


def reserving(events: Iterable[StoredEvent], now: datetime, lead: timedelta) -> list[Event]:
    return [s.event for s in events if s.state == "scheduled" and s.event.reservation is not None
            and s.event.starts_at - lead <= now < s.event.ends_at]


def running(events: Iterable[StoredEvent], now: datetime) -> list[Event]:
    return [s.event for s in events if s.state == "scheduled" and s.event.starts_at <= now < s.event.ends_at]


def participates(event: Event, user: str, groups: Iterable[str]) -> bool:
    mine = set(groups)
    return user in event.participants.users or event.group in mine or bool(mine & set(event.participants.groups))


def apply(facility: Facility, held: list[Event], on: list[Event]) -> Facility:
    """The facility with the reservations of `held` in force and the profiles of `on` offered."""
    queue = facility.events.queue
    if queue is None or not facility.queues.enabled or not (held or on):
        return facility
    groups = dict(facility.queues.groups)
    current = {g: group_accelerators(facility, g) for g in groups}
    for event in held:
        assert event.reservation is not None
        name, want = event.reservation.accelerator, event.reservation.count
        donors = lendable(facility, name)
        for donor in sorted(donors, key=lambda g: (-donors[g], g)):
            take = min(want, current[donor].get(name, 0))
            current[donor][name] = current[donor].get(name, 0) - take
            current[queue][name] = current[queue].get(name, 0) + take
            want -= take
            if want == 0:
                break
    for g, accels in current.items():
        if accels != group_accelerators(facility, g):
            groups[g] = groups[g].model_copy(update={"accelerators": accels})
    profiles = [*facility.profiles, *(p for e in on if (p := event_profile(facility, e)) is not None)]
    return facility.model_copy(update={"queues": facility.queues.model_copy(update={"groups": groups}),
                                       "profiles": profiles})


class EventsInForce:
    """The events of the admin database as they stand now, read at most every `ttl` seconds (every spawn and
    every form asks)."""

    def __init__(self, store: EventStore, ttl: float = 5.0) -> None:
        self.store = store
        self.ttl = ttl
        self._read = 0.0
        self._events: list[StoredEvent] = []
        self._memo: tuple[tuple[int, float, int], Facility] | None = None

    def events(self) -> list[StoredEvent]:
        if time.monotonic() - self._read > self.ttl:
            self._events = self.store.all()
            self._read = time.monotonic()
        return self._events

    def overlay(self, facility: Facility, now: datetime) -> Facility:
        events = self.events()
        # The same answer for the same facility, events read and second: a spawn asks many times.
        key = (id(facility), self._read, int(now.timestamp()))
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        lead = timedelta(minutes=facility.events.reserve_lead_minutes)
        result = apply(facility, reserving(events, now, lead), running(events, now))
        self._memo = (key, result)
        return result

    def queue_groups(self, facility: Facility, user: str, groups: Iterable[str], now: datetime) -> list[str]:
        """The events queue when `user` takes part in an event that is on (their sessions are charged to it)."""
        queue = facility.events.queue
        if queue is None:
            return []
        mine = list(groups)
        return [queue] if any(participates(e, user, mine) for e in running(self.events(), now)) else []
