"""Fixtures: the ledger on SQLite and on a real PostgreSQL server (Debian's, started on loopback for the session,
one fresh database per test)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

_DB_NUMBER = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "PostgreSQL is missing: `make test` installs Debian's postgresql (see .ci/install-system-deps)"
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 (trust auth, no fsync) for the session; yields its admin URL prefix."""
    bindir = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="aifacility-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: Debian's postgres account runs it
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "aif", "--no-sync",
                    "-E", "UTF8"], check=True, capture_output=True)
    log = open(base / "postgres.log", "wb")
    proc = subprocess.Popen([*as_user, str(bindir / "postgres"), "-D", str(data), "-k", str(base),
                             "-h", "127.0.0.1", "-p", str(port), "-c", "fsync=off"], stdout=log, stderr=log)
    url = f"postgresql://aif@127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(f"{url}/postgres", connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(base / 'postgres.log').read_text()}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    server: str = request.getfixturevalue("postgres")
    name = f"ledger_{next(_DB_NUMBER)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://{server.removeprefix('postgresql://')}/{name}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real control plane, Kueue and node agent on the demo facility (shared with tests/controlplane)."""
    from support.controlplane import shared_cluster

    with shared_cluster(tmp_path_factory) as c:
        yield c
