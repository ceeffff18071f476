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
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from aifacility.hubapi import HubClient
from aifacility.hubservice import die_with_hub
from aifacility.quotas.reservations import QuotaStore, Reservation

log = logging.getLogger("aifacility.keeper")

SERVICE = "spawn-keeper"
SCOPES = ["read:users:name", "read:servers", "servers"]


def _label(r: Reservation) -> str:
    return f"{r.user}/{r.server}" if r.server else f"{r.user} (default server)"


@dataclass
class Keeper:
    store: QuotaStore
    hub: Any  # aifacility.hubapi.HubClient, or a test double with its `servers` and `start_server`
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
                found = await self.hub.servers(r.user)
                active[r.user] = None if found is None else set(found)
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
            status, message = await self.hub.start_server(r.user, r.server)
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
    die_with_hub()
    parser = argparse.ArgumentParser(prog="python -m aifacility.spawner.keeper", description=__doc__.split("\n")[0])
    parser.add_argument("--quota-db", required=True, help="the spawner's quota reservations (FacilitySpawner.quota_db)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between passes (default 10)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval must be a positive number of seconds, not {args.interval}")
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
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
