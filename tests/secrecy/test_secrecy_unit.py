"""Secrets at rest and in logs, without a hub: which files are private, what the log filter redacts, and what
`aifacility.secrecy.configure` sets in a hub configuration."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sqlite3
import stat
from pathlib import Path

from traitlets.config import Config

from aifacility.auth import load_or_create_crypt_key
from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.lifetimes.store import ExtensionStore
from aifacility.quotas.reservations import Claim, FacilityLimits, QuotaStore
from aifacility.secrecy import (
    LOG_FILTER,
    SessionIdFilter,
    configure,
    private_file,
    private_sqlite,
    redact_session_ids,
    sqlite_path,
)

SID = "ab4c1c2eca3f490eb098c23ebbfeaac9"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_session_ids_are_redacted_wherever_the_hub_and_its_services_write_them() -> None:
    lines = [
        f"Setting new xsrf cookie for b'{SID}:2dde35f8cdf24311929d7770e80d7bd2' {{'path': '/hub/'}}",
        f"Cookie: jupyterhub-session-id={SID}; _xsrf=2|abc",
        f"set_cookie jupyterhub-session-id: \"{SID}\"",
        f"HubAuth cache miss: token:{SID}:{'0' * 64}",
        f"credentials {{'session_id': '{SID}', 'user': 'bob'}}",
        f"session_id={SID}",
    ]
    for line in lines:
        redacted = redact_session_ids(line)
        assert SID not in redacted and "[redacted]" in redacted, redacted
    # what is not a session id stays
    assert redact_session_ids("200 GET /hub/api/users/bob (bob@127.0.0.1) 3.2ms") == (
        "200 GET /hub/api/users/bob (bob@127.0.0.1) 3.2ms")


def test_the_filter_redacts_messages_and_their_arguments_on_a_handler() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SessionIdFilter())
    logger = logging.getLogger("secrecy-test")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("Setting new xsrf cookie for %r %s", f"{SID}:x".encode(), {"path": "/hub/"})
        logging.getLogger("secrecy-test.child").info("jupyterhub-session-id=%s", SID)  # through propagation
        logger.info("%s %d", "bad args")  # a record that does not format still reaches the handler's own path
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert SID not in text and text.count("[redacted]") == 2, text


def test_private_files_are_created_0600_and_older_ones_narrowed(tmp_path: Path) -> None:
    new = private_file(tmp_path / "a" / "secret")
    assert new.exists() and mode(new) == 0o600
    old = tmp_path / "old"
    old.write_text("x")
    old.chmod(0o644)
    private_file(old)
    assert mode(old) == 0o600 and old.read_text() == "x"  # narrowed, not truncated


def test_sqlite_follows_the_database_files_mode_for_its_journal_and_wal(tmp_path: Path) -> None:
    db = private_sqlite(tmp_path / "x.sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES ('secret')")
        sides = [p for p in tmp_path.iterdir() if p.name != "x.sqlite"]
        assert sides, list(tmp_path.iterdir())  # the -wal and -shm files exist while the connection is open
        assert all(mode(p) == 0o600 for p in [db, *sides]), {p.name: oct(mode(p)) for p in sides}


def test_our_stores_are_private_including_ones_made_before(tmp_path: Path) -> None:
    lifetimes = ExtensionStore(tmp_path / "lifetimes.sqlite")
    quotas = QuotaStore(tmp_path / "quotas.sqlite")
    asyncio.run(quotas.reserve(Claim("bob", "", ("physics",), "alveo-v70", 1),
                               FacilityLimits(load_facility(demo_facility_path()))))
    for path in tmp_path.iterdir():
        assert mode(path) == 0o600, (path.name, oct(mode(path)))
    # a state directory of an older version: its files become private when the store opens them
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    ExtensionStore(lifetimes.path)
    QuotaStore(quotas.path)
    assert all(mode(p) == 0o600 for p in tmp_path.iterdir()), {p.name: oct(mode(p)) for p in tmp_path.iterdir()}


def test_configure_makes_the_hub_database_and_cookie_secret_private_and_filters_its_log(tmp_path: Path) -> None:
    secret = tmp_path / "cookie_secret"
    secret.write_text("00" * 32)
    secret.chmod(0o644)
    c = Config()
    c.JupyterHub.db_url = f"sqlite:///{tmp_path / 'hub' / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(secret)
    c.JupyterHub.logging_config = {"handlers": {"file": {"class": "logging.FileHandler", "filename": "x.log"}},
                                   "filters": {"other": {"()": "logging.Filter"}}}
    configure(c)
    assert mode(tmp_path / "hub" / "jupyterhub.sqlite") == 0o600 and mode(secret) == 0o600
    config = c.JupyterHub.logging_config
    assert config["filters"][LOG_FILTER] == {"()": "aifacility.secrecy.SessionIdFilter"}
    assert "other" in config["filters"]
    assert config["handlers"]["console"]["filters"] == [LOG_FILTER]
    assert config["handlers"]["file"]["filters"] == [LOG_FILTER]
    assert config["handlers"]["file"]["class"] == "logging.FileHandler"
    configure(c)  # twice: the same
    assert c.JupyterHub.logging_config["handlers"]["console"]["filters"] == [LOG_FILTER]
    assert c.JupyterHub.logging_config["handlers"]["file"]["filters"] == [LOG_FILTER]


def test_only_sqlite_files_are_touched() -> None:
    assert sqlite_path("sqlite:////srv/jupyterhub/jupyterhub.sqlite") == Path("/srv/jupyterhub/jupyterhub.sqlite")
    assert sqlite_path("sqlite:///jupyterhub.sqlite") == Path("jupyterhub.sqlite")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://hub@db/jupyterhub") is None


def test_the_auth_state_key_is_private_from_its_first_byte(tmp_path: Path) -> None:
    path = tmp_path / "auth_state.key"
    key = load_or_create_crypt_key(path)
    assert mode(path) == 0o600 and len(key) == 32
    path.chmod(0o644)
    assert load_or_create_crypt_key(path) == key
    assert mode(path) == 0o600
