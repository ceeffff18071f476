"""The spawn keeper: a hub-managed service that resumes the spawns a hub restart lost.

JupyterHub does not resume a spawn that was pending when the hub stopped: at start it checks such a server like
a running one, and gives up on it when no server answers. A queued GPU session may wait hours in Kueue, so an
upgrade or a crashed hub node would drop it, although its pod keeps its place in the queue and its quota
reservation is on disk (what was accepted must survive a restart). `FacilitySpawner.poll` reports such a session
stopped without touching its pod or its reservation; the keeper then finds the reservation and starts the server
again through the REST API, with no body, so the hub uses the options it saved for that server. The spawner takes
over the pod still waiting in Kueue instead of replacing it, and the user's progress page shows the queue again.

Every stop releases the server's reservation (`FacilitySpawner.run_post_stop_hook`), so a reservation of a server
the hub does not list as active (pending or running) belongs to a lost spawn. To never mistake a stop that is
releasing at this very moment for one, the keeper acts on a reservation only when two passes `--interval`
seconds apart both find it lost, unchanged.

Run by the hub (see `configure`): `python -m aifacility.spawner.keeper --quota-db FILE [--interval SECONDS]`,
with the scopes `read:users:name`, `read:servers` and `servers`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from aifacility.spawner.quotas import QuotaStore, Reservation

log = logging.getLogger("aifacility.keeper")

SERVICE = "spawn-keeper"
SCOPES = ["read:users:name", "read:servers", "servers"]


class Hub:
    """The two REST calls the keeper makes with its service token."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}

    async def active_servers(self, user: str) -> set[str] | None:
        """Names of the user's pending or running servers; None when the hub has no such user."""
        try:
            resp = await AsyncHTTPClient().fetch(f"{self.api_url}/users/{quote(user, safe='')}",
                                                 headers=self.headers)
        except HTTPClientError as e:
            if e.code == 404:
                return None
            raise
        return set(json.loads(resp.body).get("servers") or {})

    async def start(self, user: str, server: str) -> tuple[int, str]:
        """Start a server with the options the hub saved for it; (HTTP status, the hub's message)."""
        path = f"/users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
        try:
            resp = await AsyncHTTPClient().fetch(self.api_url + path, method="POST", body="", headers=self.headers,
                                                 request_timeout=120)
            return resp.code, ""
        except HTTPClientError as e:
            body = e.response.body if e.response is not None else b""
            try:
                message = str(json.loads(body).get("message", ""))
            except (ValueError, AttributeError):
                message = body.decode(errors="replace")[:300]
            return e.code, message


def _label(r: Reservation) -> str:
    return f"{r.user}/{r.server}" if r.server else f"{r.user} (default server)"


@dataclass
class Keeper:
    store: QuotaStore
    hub: Any  # Hub, or a test double with the same two coroutines
    # (user, server) -> `created` of the reservation found lost on the previous pass
    suspects: dict[tuple[str, str], float] = field(default_factory=dict)

    async def sweep(self) -> list[tuple[Reservation, int, str]]:
        """One pass: resume what was found lost twice in a row. Returns (reservation, status, message) of each
        resumption it asked for."""
        suspects: dict[tuple[str, str], float] = {}
        resumed = []
        active: dict[str, set[str] | None] = {}
        for r in await asyncio.to_thread(self.store.reservations):
            if r.user not in active:
                active[r.user] = await self.hub.active_servers(r.user)
            servers = active[r.user]
            if servers is None:
                log.warning("%s holds a reservation but the hub has no such user; leaving it", _label(r))
                continue
            if r.server in servers:
                continue
            key = (r.user, r.server)
            if self.suspects.get(key) != r.created:
                suspects[key] = r.created  # lost for the first time: look again next pass
                continue
            status, message = await self.hub.start(r.user, r.server)
            if status in (201, 202):
                log.info("Resumed the lost spawn of %s", _label(r))
            else:
                # A refused resumption releases the reservation (the hub stops the server, which releases it).
                log.warning("The hub refused to resume %s (%s): %s", _label(r), status, message)
            resumed.append((r, status, message))
        self.suspects = suspects
        return resumed


async def run(keeper: Keeper, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await keeper.sweep()
        except Exception:
            # One failed pass (the hub restarting, a locked file) must not end the service.
            log.exception("spawn keeper pass failed; trying again in %.0f s", interval)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aifacility.spawner.keeper", description=__doc__.split("\n")[0])
    parser.add_argument("--quota-db", required=True, help="the spawner's quota reservations (FacilitySpawner.quota_db)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between passes (default 10)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval must be a positive number of seconds, not {args.interval}")
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    hub = Hub(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    keeper = Keeper(QuotaStore(args.quota_db), hub)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("spawn keeper: looking for lost spawns every %.0f s in %s", args.interval, args.quota_db)
        await run(keeper, args.interval, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
