"""The hub's own database when it is a sqlite file (the embedded facility; the chart's default too).

JupyterHub commits on its event loop, several times per login (the user, its roles, groups and auth state).
sqlite's default rollback journal fsyncs the database on every commit, so on a busy disk (etcd, notebook servers
starting) each commit stalls every request the hub is serving: logins under load queued for tens of seconds.

In write-ahead-log mode with `synchronous=NORMAL` a commit appends to the WAL without an fsync; the WAL is synced
at checkpoints. A commit survives the death of any process, the hub's included (the WAL is in the kernel's page
cache), and the database is never corrupted; only a power loss or kernel crash may roll back the last commits
before a checkpoint. That is the durability a restart needs. Sites that need more run PostgreSQL
(`AIFACILITY_HUB_DB_URL`), which this leaves alone.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from aifacility.secrecy import sqlite_path

_tuned: set[Path] = set()


def _main_file(connection: sqlite3.Connection) -> Path | None:
    for _seq, name, file in connection.execute("PRAGMA database_list"):
        if name == "main" and file:
            return Path(file).resolve()
    return None


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection) and _main_file(dbapi_connection) in _tuned:
        # Per connection (journal_mode=WAL itself is stored in the file). pysqlite would otherwise run the
        # pragma inside a transaction it opened, where sqlite ignores it.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def tune_sqlite(path: str | os.PathLike[str]) -> None:
    """Put the database at `path` in WAL mode now, and set `synchronous=NORMAL` on every connection any
    SQLAlchemy engine of this process opens to it."""
    p = Path(path).resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(p) as db:
        db.execute("PRAGMA journal_mode=WAL")
    db.close()
    _tuned.add(p)
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)


def configure(c: Any) -> None:
    """Tune the hub's database if `c.JupyterHub.db_url` (default jupyterhub.sqlite) is a sqlite file. Call it
    after `secrecy.configure`, which makes the file 0600 before anything creates it."""
    hub = c.JupyterHub
    db = sqlite_path(str(hub.db_url if "db_url" in hub else "sqlite:///jupyterhub.sqlite"))
    if db is not None:
        tune_sqlite(db)
