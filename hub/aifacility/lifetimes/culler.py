"""Enforcement: jupyterhub-idle-culler 2.x, run as a hub-managed service, with our `cull_arbiter_hook`.

Why the upstream culler and not a loop of our own: it already pages through `GET /users?state=ready`, skips
pending servers, handles named servers and slow (202) stops, and is what operators of JupyterHub know. Its own
rule (one global `timeout`, one `max_age`) cannot express per-profile lifetimes, user extensions and "idle
culling only for accelerators", so every decision is delegated to `Arbiter`, which applies the same policy as
the countdown the user sees: a server is stopped once `SessionTimes.expired` (lifetime or idle deadline).

Run as `python -m aifacility.lifetimes.culler --cull-every=60 ...` (the culler's own options).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jupyterhub_idle_culler import IdleCuller

from aifacility.facility import load_facility
from aifacility.facility.model import Facility
from aifacility.hubservice import die_with_hub
from aifacility.lifetimes.policy import when
from aifacility.lifetimes.sessions import session_times
from aifacility.lifetimes.store import ExtensionStore

log = logging.getLogger("aifacility.lifetimes.culler")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Arbiter:
    """`cull_arbiter_hook`: True when a server is past its (extended) lifetime or its idle timeout."""

    def __init__(self, facility: Facility, store: ExtensionStore, clock: Callable[[], datetime] = _utcnow) -> None:
        self.facility = facility
        self.store = store
        self.clock = clock

    def __call__(self, *, inactive: Any = None, inactive_limit: Any = None, server: dict[str, Any],
                 **_: Any) -> bool:
        user, _sep, name = str(server.get("full_name", "")).rpartition("/")
        if not user:
            return False  # not a server model we understand: leave it to the humans
        now = self.clock()
        times = session_times(self.facility, self.store, user, name, started=server.get("started"),
                              last_activity=server.get("last_activity"), user_options=server.get("user_options"),
                              now=now)
        if times is None:
            return False
        if times.expired(now):
            idle, timeout = times.idle_deadline, times.limits.idle_timeout
            why = (f"idle since {when(idle - timeout)}" if times.reason == "idle" and idle and timeout
                   else f"lifetime of profile {times.limits.profile} ended at {when(times.deadline)}")
            log.info("stopping %s/%s: %s", user, name, why)
            return True
        return False


def main() -> None:
    die_with_hub()
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    arbiter = Arbiter(load_facility(), ExtensionStore())
    # The culler's `timeout` only feeds the arbiter's `inactive_limit` argument, which the policy does not use.
    IdleCuller.launch_instance(cull_arbiter_hook=arbiter)


if __name__ == "__main__":
    main()
