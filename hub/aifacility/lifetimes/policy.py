"""Lifetime arithmetic: when a session ends, when its owner is warned, and how far it may be extended.

Pure functions over datetimes (no I/O), shared by the REST service, the culler's arbiter and the hub pages so
that the countdown a user sees and the moment the server is stopped come from the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from aifacility.facility.model import Facility, Profile

# An extension that lands this close past the cap is accepted: "extend to the cap" typed as hours
# (e.g. 0.33) must not fail on rounding.
CAP_SLACK = timedelta(seconds=1)


class ExtensionRefused(ValueError):
    """An extension request that policy does not allow; the message says why and what is possible."""


@dataclass(frozen=True)
class Limits:
    """The lifetime rules of one profile, resolved against the facility's `sessions:` policy."""

    profile: str
    lifetime: timedelta
    max_lifetime: timedelta
    idle_timeout: timedelta | None
    warn_before: timedelta
    extend_step: timedelta


def _profile(facility: Facility, name: str | None) -> Profile:
    """The profile a server was started with; servers started without one run under the default profile."""
    if name:
        try:
            return facility.profile(name)
        except KeyError:
            pass  # a profile removed from the facility file since the spawn: the default's rules apply
    for p in facility.profiles:
        if p.default:
            return p
    return facility.profiles[0]


def limits_for(facility: Facility, profile_name: str | None) -> Limits:
    p = _profile(facility, profile_name)
    s = facility.sessions
    idle_minutes = p.idle_timeout_minutes
    if idle_minutes is None and p.accelerator is not None:
        idle_minutes = s.accelerator_idle_timeout_minutes
    return Limits(
        profile=p.name,
        lifetime=timedelta(hours=p.lifetime_hours),
        max_lifetime=timedelta(hours=p.max_lifetime_hours),
        idle_timeout=None if idle_minutes is None else timedelta(minutes=idle_minutes),
        warn_before=timedelta(minutes=s.warn_before_minutes),
        extend_step=timedelta(hours=s.extend_step_hours),
    )


@dataclass(frozen=True)
class SessionTimes:
    """The schedule of one running server."""

    limits: Limits
    started: datetime  # when the lifetime clock started: the server was first seen ready
    extended: timedelta
    last_activity: datetime | None
    # The hub's `started` (spawn requested), which keys the stored extension; None means `started`.
    spawned: datetime | None = None

    @property
    def key(self) -> datetime:
        return self.spawned or self.started

    @property
    def deadline(self) -> datetime:
        """End of the (extended) lifetime."""
        return self.started + self.limits.lifetime + self.extended

    @property
    def cap(self) -> datetime:
        """No extension goes past this."""
        return self.started + self.limits.max_lifetime

    @property
    def idle_deadline(self) -> datetime | None:
        """When the server is culled if it stays idle; None when its profile is never culled for idleness."""
        if self.limits.idle_timeout is None:
            return None
        # Activity before the server was ready (the hub stamps the spawn request) does not count.
        base = max(self.last_activity, self.started) if self.last_activity else self.started
        return base + self.limits.idle_timeout

    @property
    def stop_at(self) -> datetime:
        idle = self.idle_deadline
        return self.deadline if idle is None else min(self.deadline, idle)

    @property
    def reason(self) -> Literal["lifetime", "idle"]:
        """Why the server will be stopped at `stop_at`."""
        idle = self.idle_deadline
        return "idle" if idle is not None and idle < self.deadline else "lifetime"

    def remaining(self, now: datetime) -> timedelta:
        return max(self.stop_at - now, timedelta(0))

    def warning(self, now: datetime) -> bool:
        return now >= self.stop_at - self.limits.warn_before

    def expired(self, now: datetime) -> bool:
        return now >= self.stop_at

    def extendable_by(self) -> timedelta:
        """How much more lifetime the owner may still add (at most one step at a time)."""
        return max(min(self.cap - self.deadline, self.limits.extend_step), timedelta(0))


def parse_time(value: str | datetime | None) -> datetime | None:
    """A JupyterHub timestamp (ISO 8601, `Z` suffix) or datetime, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:  # the hub's database stores naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(d: timedelta) -> str:
    """A human duration: '2 h 05 min', '3 min 20 s', '12 s'."""
    total = max(int(d.total_seconds()), 0)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


def hours(d: timedelta) -> str:
    return f"{d.total_seconds() / 3600:.4g} h"


def asked(number: int | float) -> str:
    """A number from a request, for a message: 4 significant digits, whatever its size."""
    try:
        return f"{float(number):.4g}"
    except OverflowError:  # an int beyond any float
        return "more than 1e308"


def check_extension(times: SessionTimes, add_hours: object, now: datetime) -> timedelta:
    """The new total extension after adding `add_hours`, or ExtensionRefused saying why not.

    `add_hours` comes straight from a request body, so its type is checked here too.
    """
    if isinstance(add_hours, bool) or not isinstance(add_hours, int | float):
        raise ExtensionRefused("'hours' must be a number of hours, e.g. {\"hours\": 2}")
    if not add_hours > 0 or add_hours != add_hours or add_hours == float("inf"):
        raise ExtensionRefused(f"'hours' must be a positive number of hours, not {asked(add_hours)}")
    step = times.limits.extend_step
    if times.expired(now):
        raise ExtensionRefused(f"this session already reached its end at {when(times.stop_at)} "
                               "and is being stopped; start a new one")
    # Compared as numbers first: a timedelta of 1e308 hours does not exist (OverflowError).
    if add_hours > step.total_seconds() / 3600:
        raise ExtensionRefused(f"one extension adds at most {hours(step)} (asked for {asked(add_hours)} h); "
                               f"the session ends at {when(times.deadline)}")
    add = timedelta(hours=add_hours)
    room = times.cap - times.deadline
    if add > room + CAP_SLACK:
        more = (f"it can be extended by at most {hours(room)} more" if room > CAP_SLACK
                else "it cannot be extended any further")
        raise ExtensionRefused(
            f"sessions of profile '{times.limits.profile}' may run at most {hours(times.limits.max_lifetime)} "
            f"after their start (until {when(times.cap)}); this session ends at {when(times.deadline)}, "
            f"so {more} (asked for {hours(add)})")
    return min(times.extended + add, times.limits.max_lifetime - times.limits.lifetime)
