"""From a JupyterHub server (its REST model, or the hub's own Spawner) to its schedule and a JSON description.

The server's profile is read from `user_options["profile"]` and the server run is identified by the hub's
`started`, so the spawner needs no hook; the lifetime clock starts when the server is first seen ready.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aifacility.facility.model import Facility
from aifacility.lifetimes.policy import SessionTimes, duration, limits_for, parse_time, when
from aifacility.lifetimes.store import ExtensionStore


def profile_of(user_options: object) -> str | None:
    if isinstance(user_options, dict) and isinstance(user_options.get("profile"), str):
        return user_options["profile"]
    return None


def session_times(facility: Facility, store: ExtensionStore, user: str, server: str, *,
                  started: str | datetime | None, last_activity: str | datetime | None,
                  user_options: object, now: datetime | None = None) -> SessionTimes | None:
    """The schedule of a *ready* server, or None when the hub reports no start time (not started).

    Callers pass only ready servers: the first call for a server run records `now` as its ready time.
    """
    spawned = parse_time(started)
    if spawned is None:
        return None
    ready_at, extended = store.observe(user, server, spawned, now or datetime.now(UTC))
    return SessionTimes(limits=limits_for(facility, profile_of(user_options)), started=ready_at,
                        extended=extended, last_activity=parse_time(last_activity), spawned=spawned)


def times_from_model(facility: Facility, store: ExtensionStore, user: str, model: dict[str, Any]
                     ) -> SessionTimes | None:
    """Schedule of a server from its hub REST model (`GET /hub/api/users/{name}` → `servers`)."""
    if not model.get("ready"):
        return None  # pending spawns and stops are the hub's business; their clock starts when they are up
    return session_times(facility, store, user, model.get("name", ""), started=model.get("started"),
                         last_activity=model.get("last_activity"), user_options=model.get("user_options"))


def message(times: SessionTimes, now: datetime) -> str:
    left = duration(times.remaining(now))
    if times.expired(now):
        return "This session has reached its end and is being stopped."
    if times.reason == "idle":
        return (f"This {times.limits.profile} session is idle: it will be stopped at {when(times.stop_at)} "
                f"(in {left}) unless you use it.")
    return f"This session ends at {when(times.stop_at)} (in {left})."


def accelerator_text(facility: Facility, profile: str) -> str | None:
    """What the session's profile holds, as its status bar shows it ("1 x NVIDIA T4"); None without one."""
    try:
        ask = facility.profile(profile).accelerator
    except KeyError:  # a profile removed from the facility file since the session started
        return None
    if ask is None:
        return None
    return f"{ask.count} x {facility.accelerator(ask.name).display_name}"


def describe(user: str, server: str, times: SessionTimes, now: datetime) -> dict[str, Any]:
    """The JSON the REST API returns for one server."""
    idle = times.idle_deadline
    hours = timedelta(hours=1).total_seconds()
    return {
        "user": user,
        "server": server,
        "profile": times.limits.profile,
        "spawned": times.key.isoformat(),  # the hub's `started`: when the spawn was requested
        "started": times.started.isoformat(),  # when it was first seen ready: the lifetime counts from here
        "deadline": times.deadline.isoformat(),
        "cap": times.cap.isoformat(),
        "idle_deadline": idle.isoformat() if idle else None,
        "idle_timeout_seconds": times.limits.idle_timeout.total_seconds() if times.limits.idle_timeout else None,
        "stop_at": times.stop_at.isoformat(),
        "stop_reason": times.reason,
        "remaining_seconds": round(times.remaining(now).total_seconds(), 1),
        "warning": times.warning(now),
        "warn_before_seconds": times.limits.warn_before.total_seconds(),
        "extended_hours": round(times.extended.total_seconds() / hours, 4),
        "extendable_hours": round(times.extendable_by().total_seconds() / hours, 4),
        "message": message(times, now),
    }
