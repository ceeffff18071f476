"""Spawn-time quotas: concurrent servers and accelerator units, per user and per group.

Limits come from a `LimitsSource` (the facility file's `quotas:` with the admin service's policies over it: see
policy.py) and usage from the reservations this module keeps. Every spawn reserves before its pod is created and
releases when its server stops; check and reserve happen under one asyncio lock (the hub is one process) and inside
one `BEGIN IMMEDIATE` sqlite transaction, so two requests for the last unit can never both win, and an accepted
reservation is on disk before the pod exists (it survives a hub restart).

Which group pays when a user is in several: the candidates are the user's groups that open the profile, in the
order of the profile's `groups` list (for a profile open to everyone: the user's groups in alphabetical order);
the first candidate with room pays. A group without a quota entry has no limit at the group level. The user's
own limits (`quotas.users[<name>]`, else `quotas.default_user`) are checked as well, whatever group pays.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aifacility.facility.model import Facility, Limits
from aifacility.secrecy import private_sqlite


class LimitsSource(Protocol):
    """Where limits come from. Kept this small so an admin-edited source can replace the facility file."""

    def user_limits(self, user: str) -> Limits: ...

    def group_limits(self, group: str) -> Limits | None: ...


class FacilityLimits:
    """Limits as written in the facility file's `quotas:` section."""

    def __init__(self, facility: Facility) -> None:
        self.quotas = facility.quotas

    def user_limits(self, user: str) -> Limits:
        return self.quotas.users.get(user, self.quotas.default_user)

    def group_limits(self, group: str) -> Limits | None:
        return self.quotas.groups.get(group)


class QuotaExceeded(Exception):
    """A spawn would go over a limit; the message names the limit and how to free it."""


@dataclass(frozen=True)
class Claim:
    """What one spawn asks for."""

    user: str
    server: str  # "" for the default server
    groups: tuple[str, ...]  # groups that may pay, in order of preference
    accelerator: str | None = None
    units: int = 0
    queued: bool = False  # waits in Kueue: accelerator limits are Kueue's to enforce while it waits
    queueable: bool = False  # whether the message may suggest the queue


@dataclass(frozen=True)
class Reservation:
    user: str
    server: str
    group: str | None
    accelerator: str | None
    units: int
    queued: bool
    created: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    user TEXT NOT NULL,
    server TEXT NOT NULL,
    grp TEXT,
    accelerator TEXT,
    units INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    PRIMARY KEY (user, server)
)
"""


_COLUMNS = "user, server, grp, accelerator, units, queued, created"


def _reservation(r: tuple[Any, ...]) -> Reservation:
    return Reservation(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5]), float(r[6]))


def _server_label(user: str, server: str) -> str:
    return f"{user}/{server}" if server else f"{user} (default server)"


class QuotaStore:
    """Reservations in a small sqlite file. Use one instance per file per process (see `quota_store`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = private_sqlite(path)  # 0600 before sqlite first opens it (see aifacility.secrecy)
        self._lock = asyncio.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: operations run in worker threads, and sqlite connections are not
        # shared across threads. Autocommit mode, so transactions are the explicit BEGIN IMMEDIATE below.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        return db

    # --- reading -------------------------------------------------------------------------------------

    def reservations(self) -> list[Reservation]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM reservations "
                              "ORDER BY created").fetchall()
        return [_reservation(r) for r in rows]

    def held(self, user: str, server: str) -> Reservation | None:
        """What a server holds now. At the start of a spawn, a reservation means the previous spawn of that
        server was lost (the hub restarted while it was pending): every stop releases what it held."""
        with self._connect() as db:
            r = db.execute(f"SELECT {_COLUMNS} FROM reservations "
                           "WHERE user = ? AND server = ?", (user, server)).fetchone()
        return None if r is None else _reservation(r)

    # --- reserving -----------------------------------------------------------------------------------

    async def reserve(self, claim: Claim, limits: LimitsSource,
                      label: Callable[[str], str] = str) -> Reservation:
        """Check `claim` against `limits` and record it; raises QuotaExceeded (nothing recorded) if over.

        `label` turns an accelerator name into what the message shows ("NVIDIA Tesla T4").
        """
        async with self._lock:
            # The sqlite work (with its fsync) runs off the event loop; the lock keeps check+insert atomic
            # with respect to every other spawn of this hub.
            return await asyncio.to_thread(self._reserve, claim, limits, label)

    def _reserve(self, claim: Claim, limits: LimitsSource, label: Callable[[str], str]) -> Reservation:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            # A new spawn of the same server replaces what an earlier one of it held.
            db.execute("DELETE FROM reservations WHERE user = ? AND server = ?", (claim.user, claim.server))
            rows = [_reservation(r) for r in db.execute(
                f"SELECT {_COLUMNS} FROM reservations").fetchall()]
            _check_user(claim, limits.user_limits(claim.user), rows, label)
            group = _choose_group(claim, limits, rows, label)
            res = Reservation(claim.user, claim.server, group, claim.accelerator, claim.units, claim.queued,
                              time.time())
            db.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (res.user, res.server, res.group, res.accelerator, res.units, int(res.queued),
                        res.created))
            db.execute("COMMIT")
            return res
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    async def admitted(self, user: str, server: str) -> None:
        """A queued session was admitted by Kueue: from now on its units count like any other session's."""
        async with self._lock:
            await asyncio.to_thread(self._execute, "UPDATE reservations SET queued = 0 WHERE user = ? AND server = ?",
                                    (user, server))

    async def release(self, user: str, server: str) -> None:
        """The server stopped (or never started): free what it held. Releasing twice is harmless."""
        async with self._lock:
            await asyncio.to_thread(self._execute, "DELETE FROM reservations WHERE user = ? AND server = ?",
                                    (user, server))

    def _execute(self, sql: str, args: tuple[str, ...]) -> None:
        db = self._connect()
        try:
            db.execute(sql, args)
        finally:
            db.close()


def _units(rows: Iterable[Reservation], accelerator: str) -> int:
    # Queued sessions hold no device yet: Kueue counts them against the group's queue until admission.
    return sum(r.units for r in rows if r.accelerator == accelerator and not r.queued)


def _holders(rows: Iterable[Reservation], accelerator: str | None = None) -> str:
    parts = [f"{_server_label(r.user, r.server)}" + (f": {r.units}" if accelerator else "")
             for r in rows if accelerator is None or (r.accelerator == accelerator and not r.queued)]
    return ", ".join(parts) or "none"


def _queue_hint(claim: Claim) -> str:
    return " or tick 'queue' on the spawn form (\"queue\": true in the API) to wait for a free unit" \
        if claim.queueable and not claim.queued else ""


def _check_user(claim: Claim, lim: Limits, rows: list[Reservation], label: Callable[[str], str]) -> None:
    mine = [r for r in rows if r.user == claim.user]
    if lim.servers is not None and len(mine) + 1 > lim.servers:
        raise QuotaExceeded(
            f"Quota reached: {claim.user} may run {lim.servers} server(s) at once and already has {len(mine)} "
            f"({_holders(mine)}). Stop one from the hub home page (/hub/home) or with "
            f"DELETE /hub/api/users/{claim.user}/servers/<name>, then start again.")
    acc = claim.accelerator
    if acc and claim.units and not claim.queued and acc in lim.accelerators:
        used = _units(mine, acc)
        if used + claim.units > lim.accelerators[acc]:
            raise QuotaExceeded(
                f"Quota reached: {claim.user} may use {lim.accelerators[acc]} {label(acc)} unit(s) at once and "
                f"already uses {used} ({_holders(mine, acc)}). Stop one of those servers to free it"
                f"{_queue_hint(claim)}.")


def _group_problem(claim: Claim, group: str, lim: Limits, rows: list[Reservation],
                   label: Callable[[str], str]) -> str | None:
    theirs = [r for r in rows if r.group == group]
    if lim.servers is not None and len(theirs) + 1 > lim.servers:
        return (f"group '{group}' may run {lim.servers} server(s) at once and its members run {len(theirs)} "
                f"({_holders(theirs)})")
    acc = claim.accelerator
    if acc and claim.units and not claim.queued and acc in lim.accelerators:
        used = _units(theirs, acc)
        if used + claim.units > lim.accelerators[acc]:
            return (f"group '{group}' may use {lim.accelerators[acc]} {label(acc)} unit(s) at once and its "
                    f"members use {used} ({_holders(theirs, acc)})")
    return None


def _choose_group(claim: Claim, limits: LimitsSource, rows: list[Reservation],
                  label: Callable[[str], str]) -> str | None:
    if not claim.groups:
        return None
    problems = []
    for group in claim.groups:
        lim = limits.group_limits(group)
        problem = _group_problem(claim, group, lim, rows, label) if lim is not None else None
        if problem is None:
            return group
        problems.append(problem)
    raise QuotaExceeded(
        "Quota reached: " + "; ".join(problems) + ". A session of the group must stop to free room"
        f"{_queue_hint(claim)}.")


def headroom(user: str, payers: Iterable[str], accelerator: str, limits: LimitsSource,
             rows: Iterable[Reservation]) -> int | None:
    """How many more units of `accelerator` `user` may start now, counted as `reserve` counts a direct session:
    within the user's own limit and within the limit of the best of the groups that may pay. None: no limit."""
    rows = list(rows)

    def left(lim: Limits | None, held: list[Reservation]) -> int | None:
        if lim is None or accelerator not in lim.accelerators:
            return None
        return max(0, lim.accelerators[accelerator] - _units(held, accelerator))

    mine = left(limits.user_limits(user), [r for r in rows if r.user == user])
    groups = [left(limits.group_limits(g), [r for r in rows if r.group == g]) for g in payers]
    best: int | None = None if not groups or None in groups else max(g for g in groups if g is not None)
    if mine is None:
        return best
    return mine if best is None else min(mine, best)


_STORES: dict[Path, QuotaStore] = {}


def quota_store(path: str | Path) -> QuotaStore:
    """The process-wide store of a file: every spawner shares its lock, which is what makes check+reserve
    atomic."""
    key = Path(path).resolve()
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = QuotaStore(key)
    return store
