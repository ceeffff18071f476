"""The hub's sqlite database commits without an fsync each time (WAL, synchronous=NORMAL), and keeps what it
committed when the process that wrote it dies."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text
from traitlets.config import Config

from aifacility.hubdb import configure, tune_sqlite
from aifacility.secrecy import configure as configure_secrecy


def _pragmas(url: str) -> tuple[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        mode = conn.execute(text("PRAGMA journal_mode")).scalar_one()
        sync = conn.execute(text("PRAGMA synchronous")).scalar_one()
    engine.dispose()
    return str(mode), int(sync)


def test_the_hub_database_is_in_wal_mode_with_normal_sync_and_private(tmp_path: Path) -> None:
    c = Config()
    c.JupyterHub.db_url = f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(tmp_path / "cookie")
    configure_secrecy(c)
    configure(c)
    assert _pragmas(c.JupyterHub.db_url) == ("wal", 1)  # 1 = NORMAL
    engine = create_engine(c.JupyterHub.db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    for f in tmp_path.glob("jupyterhub.sqlite*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    engine.dispose()


def test_other_sqlite_databases_of_the_process_keep_their_own_settings(tmp_path: Path) -> None:
    tune_sqlite(tmp_path / "hub.sqlite")
    assert _pragmas(f"sqlite:///{tmp_path / 'other.sqlite'}") == ("delete", 2)  # sqlite's defaults: FULL


def test_a_commit_survives_the_sudden_death_of_the_process_that_made_it(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    writer = f"""
import os, signal
from sqlalchemy import create_engine, text
from aifacility.hubdb import tune_sqlite
tune_sqlite({str(db)!r})
engine = create_engine("sqlite:///{db}")
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE users (name TEXT)"))
    conn.execute(text("INSERT INTO users VALUES ('alice')"))
os.kill(os.getpid(), signal.SIGKILL)  # no checkpoint, no close
"""
    proc = subprocess.run([sys.executable, "-c", writer], env={**os.environ}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / "hub.sqlite-wal").stat().st_size > 0  # the commit is in the log, not yet in the file
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["alice"]
    engine.dispose()
