"""The plugin's memory: one sqlite row per pod, written before a job is submitted and after it is.

A restarted plugin reads everything back from here: which pods it owns, their batch job ids, which deletes it
still has to see through, and the final status of finished pods (so they are never queried again).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS pods (
  uid TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  job_dir TEXT NOT NULL,
  jid TEXT,
  phase TEXT NOT NULL,          -- submitting | submitted | deleting | deleted
  created REAL NOT NULL,
  final_status TEXT,            -- PodStatus JSON once every container has terminated
  delete_error TEXT,
  containers TEXT NOT NULL,     -- JSON {"init": [[name, image]...], "run": [...]}
  deleted_at REAL,              -- when the batch system confirmed the delete
  cancel_after REAL             -- a deleting pod's job, asked to stop, is cancelled from then on
);
CREATE INDEX IF NOT EXISTS pods_phase ON pods(phase);
"""


@dataclass(frozen=True)
class PodRow:
    uid: str
    namespace: str
    name: str
    dir: str  # the job dir; a str, as building 500 Path objects per /status poll is measurable
    jid: str | None
    phase: str
    created: float
    final_status: str | None
    delete_error: str | None
    containers: str
    cancel_after: float | None = None

    @property
    def job_dir(self) -> Path:
        return Path(self.dir)


class Store:
    """Thread-safe (one connection, one lock); WAL with synchronous=FULL: a commit is on disk when it returns
    (the row written before a job is submitted, and a delete request); see _exec for the other records."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(pods)")}
        if "deleted_at" not in columns:  # a database from before deleted rows were pruned
            self._db.execute("ALTER TABLE pods ADD COLUMN deleted_at REAL")
        if "cancel_after" not in columns:  # a database from before graceful deletes
            self._db.execute("ALTER TABLE pods ADD COLUMN cancel_after REAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: Iterable[object] = ()) -> list[PodRow]:
        with self._lock:
            cur = self._db.execute(sql, tuple(args))
            return [PodRow(*r) for r in cur.fetchall()]

    def _exec(self, sql: str, args: Iterable[object], durable: bool = True) -> None:
        """durable=False for records the plugin can rebuild from the batch system and the job dir: they
        survive a crash of the plugin (WAL), only not a power loss, and save an fsync on the hot path."""
        with self._lock:
            if durable:
                self._db.execute(sql, tuple(args))
                return
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute(sql, tuple(args))
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    _COLS = "uid, namespace, name, job_dir, jid, phase, created, final_status, delete_error, containers, cancel_after"

    def get(self, uid: str) -> PodRow | None:
        rows = self._rows(f"SELECT {self._COLS} FROM pods WHERE uid = ?", (uid,))
        return rows[0] if rows else None

    def get_many(self, uids: list[str]) -> dict[str, PodRow]:
        out: dict[str, PodRow] = {}
        for i in range(0, len(uids), 500):  # sqlite's host-parameter limit
            chunk = uids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._rows(f"SELECT {self._COLS} FROM pods WHERE uid IN ({marks})", chunk):
                out[r.uid] = r
        return out

    def in_phase(self, *phases: str) -> list[PodRow]:
        marks = ",".join("?" * len(phases))
        return self._rows(f"SELECT {self._COLS} FROM pods WHERE phase IN ({marks})", phases)

    def begin_submit(self, uid: str, namespace: str, name: str, job_dir: Path, containers: str) -> None:
        self._exec(
            "INSERT OR REPLACE INTO pods (uid, namespace, name, job_dir, jid, phase, created, containers) "
            "VALUES (?, ?, ?, ?, NULL, 'submitting', ?, ?)",
            (uid, namespace, name, str(job_dir), time.time(), containers),
        )

    def submitted(self, uid: str, jid: str) -> None:
        # Rebuildable: a "submitting" row is resolved by looking the job up by name (the pod uid).
        self._exec("UPDATE pods SET jid = ?, phase = 'submitted' WHERE uid = ?", (jid, uid), durable=False)

    def forget(self, uid: str) -> None:
        self._exec("DELETE FROM pods WHERE uid = ?", (uid,))

    def set_final(self, uid: str, status_json: str) -> None:
        # Rebuildable from the exit-status files in the job dir.
        self._exec("UPDATE pods SET final_status = ? WHERE uid = ?", (status_json, uid), durable=False)

    def mark_deleting(self, uid: str, cancel_after: float | None = None) -> None:
        """`cancel_after`: the job was asked to stop gracefully; it is cancelled from then on (None: at once)."""
        self._exec("UPDATE pods SET phase = 'deleting', cancel_after = ? WHERE uid = ?", (cancel_after, uid))

    def delete_failed(self, uid: str, error: str) -> None:
        self._exec("UPDATE pods SET delete_error = ? WHERE uid = ?", (error, uid), durable=False)

    def mark_deleted(self, uid: str) -> None:
        # Rebuildable: a pod still marked "deleting" is checked again and found ended.
        self._exec("UPDATE pods SET phase = 'deleted', delete_error = NULL, deleted_at = ? WHERE uid = ?",
                   (time.time(), uid), durable=False)

    def prune_deleted(self, older_than_seconds: float) -> int:
        """Forget pods deleted longer ago than this; returns how many. Their row only refuses a late /create of
        the same pod uid, which nothing sends days after the delete."""
        cutoff = time.time() - older_than_seconds
        with self._lock:
            cur = self._db.execute("DELETE FROM pods WHERE phase = 'deleted' AND COALESCE(deleted_at, created) < ?",
                                   (cutoff,))
            return cur.rowcount
