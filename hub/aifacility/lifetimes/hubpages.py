"""The countdown on the hub's own pages: a `template_vars` callable, evaluated by the hub for the signed-in user.

It runs inside the hub process and reads the hub's Spawner objects directly (no REST round trip per page
view); the numbers are the ones the culler acts on, since both use `sessions.session_times`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aifacility.facility.model import Facility
from aifacility.lifetimes.sessions import describe, session_times
from aifacility.lifetimes.store import ExtensionStore

log = logging.getLogger("aifacility.lifetimes")


class HubSessions:
    """`c.JupyterHub.template_vars["aifacility_lifetimes"]`: {"page": url, "sessions": [describe(...), ...]}."""

    def __init__(self, facility: Facility, store: ExtensionStore, page_url: str) -> None:
        self.facility = facility
        self.store = store
        self.page_url = page_url

    def __call__(self, user: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"page": self.page_url, "sessions": []}
        if user is None:
            return out
        now = datetime.now(UTC)
        try:
            for name, spawner in sorted(user.spawners.items()):
                if not spawner.ready:
                    continue
                orm = spawner.orm_spawner
                times = session_times(self.facility, self.store, user.name, name, started=orm.started,
                                      last_activity=orm.last_activity, user_options=spawner.user_options)
                if times is not None:
                    out["sessions"].append(describe(user.name, name, times, now))
        except Exception:
            # A page without the countdown beats a hub page that fails; the service still answers.
            log.exception("could not compute session lifetimes of %s", user.name)
        return out
