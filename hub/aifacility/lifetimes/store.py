"""Accepted extensions, on disk before they are acknowledged, so that they survive a restart of the hub,
the lifetimes service or the culler.

One sqlite file in the hub's data directory. A row is keyed by the server *and its start time*: a server that is
stopped and started again gets a fresh lifetime without anyone having to delete the old row. The service writes,
the culler's arbiter and the hub pages read (WAL mode lets them read while the service writes).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aifacility.secrecy import private_sqlite

DB_ENV = "AIFACILITY_LIFETIMES_DB"
DB_NAME = "lifetimes.sqlite"

SCHEMA = ["""
CREATE TABLE IF NOT EXISTS extensions (
    user TEXT NOT NULL,
    server TEXT NOT NULL,
    started TEXT NOT NULL,
    extended_seconds REAL NOT NULL,
    updated TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (user, server, started)
)""", """
CREATE TABLE IF NOT EXISTS ready (
    user TEXT NOT NULL,
    server TEXT NOT NULL,
    started TEXT NOT NULL,
    ready_at TEXT NOT NULL,
    PRIMARY KEY (user, server, started)
)"""]


def default_path() -> Path:
    """`$AIFACILITY_LIFETIMES_DB`, else `lifetimes.sqlite` in `$AIFACILITY_HUB_DATA` (the hub's data directory)."""
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV])
    return Path(os.environ.get("AIFACILITY_HUB_DATA", "/srv/jupyterhub")) / DB_NAME


def _key_time(started: datetime) -> str:
    return started.astimezone(UTC).isoformat(timespec="microseconds")


class ExtensionStore:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else default_path()
        private_sqlite(self.path)  # 0600 before sqlite first opens it: its journal and WAL files follow its mode
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            for table in SCHEMA:
                db.execute(table)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A short-lived connection per call: readers live in other processes, and nothing here is hot.
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def extended(self, user: str, server: str, started: datetime) -> timedelta:
        with self._connect() as db:
            row = db.execute("SELECT extended_seconds FROM extensions WHERE user=? AND server=? AND started=?",
                             (user, server, _key_time(started))).fetchone()
        return timedelta(seconds=row[0]) if row else timedelta(0)

    def set_extended(self, user: str, server: str, started: datetime, extended: timedelta, by: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as db:  # the context manager commits before we return, i.e. before the 200
            db.execute(
                "INSERT INTO extensions (user, server, started, extended_seconds, updated, updated_by) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user, server, started) DO UPDATE SET "
                "extended_seconds=excluded.extended_seconds, updated=excluded.updated, updated_by=excluded.updated_by",
                (user, server, _key_time(started), extended.total_seconds(), now, by))

    def observe(self, user: str, server: str, started: datetime, now: datetime) -> tuple[datetime, timedelta]:
        """(when the server was first seen ready, its extension), recording `now` as the former if it is new.

        The hub's `started` is when the spawn *began*: a GPU session waiting hours in the Kueue queue would
        otherwise lose its lifetime (and count as idle) before the user ever saw it. Whoever sees the server
        ready first (the culler's periodic pass, the service, a hub page) starts its clock.
        """
        key = (user, server, _key_time(started))
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO ready (user, server, started, ready_at) VALUES (?, ?, ?, ?)",
                       (*key, _key_time(max(now, started))))
            ready_at = db.execute("SELECT ready_at FROM ready WHERE user=? AND server=? AND started=?",
                                  key).fetchone()[0]
            row = db.execute("SELECT extended_seconds FROM extensions WHERE user=? AND server=? AND started=?",
                             key).fetchone()
        return datetime.fromisoformat(ready_at), timedelta(seconds=row[0] if row else 0)

    def forget_before(self, cutoff: datetime) -> int:
        """Drop rows of servers started before `cutoff` (long stopped); returns how many."""
        with self._connect() as db:
            n = db.execute("DELETE FROM extensions WHERE started < ?", (_key_time(cutoff),)).rowcount
            return n + db.execute("DELETE FROM ready WHERE started < ?", (_key_time(cutoff),)).rowcount
