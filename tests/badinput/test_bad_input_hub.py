"""Every bad input of issue 9's hub side against one real hub: the spawn API's checks (aifacility.spawner.api),
the lifetimes service, the secrets configuration, a running server (local processes, so that a session exists
to extend). Each request is answered with a 400 or a 413 whose JSON message a person can act on, never a 5xx or a
traceback; afterwards nothing is half-stored (no token, server row or saved options more; no extension), the
hub's database and the lifetimes store have not grown, and no log line quotes a huge value.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from support.hub_process import HubProcess, free_port, wait_for

MB = 1024 * 1024
SINGLEUSER = Path(sys.executable).parent / "jupyterhub-singleuser"
FACILITY = """
name: bad-input-test
images:
  - {name: py, display_name: Python, image: "python:3.11"}
profiles:
  - {name: cpu, display_name: CPU, images: [py], default: true, lifetime_hours: 1, max_lifetime_hours: 3}
sessions:
  extend_step_hours: 0.5
"""

SPAWN_BODIES: list[tuple[bytes, int]] = [
    (b"[1,2,3]", 400), (b"null", 400), (b'"cpu"', 400), (b"7", 400), (b"false", 400),
    (b'{"profile": "cpu"', 400), (b"[" * 8000 + b"]" * 8000, 400), (b"\xff\xfe", 400),
    (b'{"profile": "cpu", "extra": 1}', 400), (b'{"profile": ["cpu"]}', 400),
    (b'{"profile": "cpu", "queue": "false"}', 400), (b'{"profile": "cpu", "queue": -1}', 400),
    (b'{"profile": "cpu", "queue": 0}', 400), (b'{"profile": "cpu", "queue": "true"}', 400),
    (json.dumps({"profile": "p" * 5000}).encode(), 400),
    (json.dumps({"profile": "p" * MB}).encode(), 413),
    (json.dumps({"profile": "cpu", "unknown": "u" * (8 * MB)}).encode(), 413),
]
EXTEND_BODIES: list[tuple[bytes, int]] = [
    (b'{"hours": 1e308}', 400), (b'{"hours": NaN}', 400), (b'{"hours": Infinity}', 400), (b'{"hours": -2}', 400),
    (b'{"hours": 0}', 400), (b'{"hours": "1"}', 400), (b'{"hours": null}', 400), (b'{"hours": [1]}', 400),
    (b'{"hours": ' + b"9" * 4000 + b"}", 400), (b"[1]", 400), (b"{}", 400), (b'{"hours": 1, "x": 1}', 400),
    (b"\x00\x01", 400), (b'{"hours": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
    (b'{"hours": 0.1, "pad": "' + b"x" * MB + b'"}', 413), (b'{"hours": 0.1, "pad": "' + b"x" * (8 * MB) + b'"}', 413),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    work = tmp_path_factory.mktemp("bad-input")
    (work / "facility.yaml").write_text(FACILITY)
    h = HubProcess(work)
    h.launch(textwrap.dedent(f"""
        from jupyterhub.spawner import SimpleLocalProcessSpawner
        from aifacility.facility import load_facility
        from aifacility.lifetimes import configure as configure_lifetimes
        from aifacility.secrecy import configure as configure_secrecy
        from aifacility.spawner.api import install
        from aifacility.spawner.tokens import ServerTokenMixin

        class Spawner(ServerTokenMixin, SimpleLocalProcessSpawner):
            pass

        install()
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.JupyterHub.spawner_class = Spawner
        c.SimpleLocalProcessSpawner.home_dir_template = "{work}/home/{{username}}"
        c.Spawner.cmd = ["{SINGLEUSER}"]
        c.Spawner.args = ["--allow-root"]
        c.Spawner.ip = "127.0.0.1"
        c.JupyterHub.services = [{{"name": "tester", "api_token": "{h.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
                                     "scopes": ["admin:users", "admin:servers", "tokens"]}}]
        configure_lifetimes(c, load_facility("{work}/facility.yaml"), data_dir="{work}/data", port={free_port()})
        configure_secrecy(c)
    """))
    try:
        wait_for(lambda: _get(h, "/services/lifetimes/api/users/x").status_code == 403, 60, "the lifetimes service")
        for user in ("alice", "bob"):
            h.api("POST", f"/users/{user}").raise_for_status()
        assert h.api("POST", "/users/bob/server", json={"profile": "cpu"}).status_code in (201, 202)
        wait_for(lambda: (h.api("GET", "/users/bob").json()["servers"].get("") or {}).get("ready"), 90,
                 "bob's server")
        yield h
    finally:
        h.api("DELETE", "/users/bob/server")
        wait_for(lambda: not h.api("GET", "/users/bob").json()["servers"], 60, "bob's server to stop")
        h.stop()


def _get(hub: HubProcess, path: str) -> requests.Response:
    try:
        return requests.get(f"{hub.url}{path}", timeout=5)
    except requests.ConnectionError:
        return requests.Response()


def _post(hub: HubProcess, path: str, body: bytes, token: str) -> requests.Response:
    return requests.post(f"{hub.url}{path}", data=body, timeout=120,
                         headers={"Authorization": f"token {token}", "Content-Type": "application/json"})


def _snapshot(hub: HubProcess) -> dict[str, Any]:
    # (not the columns that move with every request: last_activity, and the running server's state)
    queries = {
        "api_tokens": "SELECT id, user_id, service_id, hashed, note FROM api_tokens ORDER BY id",
        "servers": "SELECT id, proto, ip, port, base_url FROM servers ORDER BY id",
        "spawners": "SELECT id, user_id, server_id, name, user_options, started FROM spawners ORDER BY id",
        "oauth_clients": "SELECT id, identifier, secret FROM oauth_clients ORDER BY id",
    }
    with sqlite3.connect(f"file:{hub.workdir / 'jupyterhub.sqlite'}?mode=ro", uri=True) as db:
        hub_rows = {table: db.execute(query).fetchall() for table, query in queries.items()}
    with sqlite3.connect(f"file:{hub.workdir / 'data' / 'lifetimes.sqlite'}?mode=ro", uri=True) as db:
        lifetimes = {"extensions": db.execute("SELECT * FROM extensions").fetchall(),
                     "ready": db.execute("SELECT * FROM ready").fetchall()}
    return {"hub": hub_rows, "lifetimes": lifetimes}


def _bytes(hub: HubProcess) -> dict[str, int]:
    files = [*hub.workdir.glob("jupyterhub.sqlite*"), *(hub.workdir / "data").glob("lifetimes.sqlite*")]
    return {p.name: p.stat().st_size for p in files}


def _answer_is_for_people(r: requests.Response, status: int) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert "Traceback" not in r.text and "Error:" not in r.text and "TraitError" not in r.text
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    message = r.json()["message"]
    assert isinstance(message, str) and 20 < len(message) < 600, message


def test_every_bad_input_is_refused_clearly_and_leaves_nothing_behind(hub: HubProcess) -> None:
    bob = hub.api("POST", "/users/bob/tokens", json={"note": "bad input test"}).json()["token"]
    # the lifetimes service notes when it first sees a session ready: let it, before counting what is stored
    seen = requests.get(f"{hub.url}/services/lifetimes/api/users/bob/server", timeout=30,
                        headers={"Authorization": f"token {bob}"})
    assert seen.status_code == 200, seen.text
    wait_for(lambda: _snapshot(hub)["lifetimes"]["ready"], 30, "the lifetimes store to note bob's session")
    before, sizes = _snapshot(hub), _bytes(hub)
    log_from = hub.log_path.stat().st_size

    for body, status in SPAWN_BODIES:
        for path in ("/hub/api/users/alice/server", "/hub/api/users/bob/server"):
            _answer_is_for_people(_post(hub, path, body, hub.token), status)
    for body, status in EXTEND_BODIES:
        _answer_is_for_people(_post(hub, "/services/lifetimes/api/users/bob/server/extend", body, bob), status)

    assert _snapshot(hub) == before
    after = _bytes(hub)
    assert all(after.get(name, 0) <= size for name, size in sizes.items()), (sizes, after)
    assert not set(after) - set(sizes), (sizes, after)
    with hub.log_path.open("rb") as log:
        log.seek(log_from)
        lines = log.read().splitlines()
    assert max(len(line) for line in lines) < 2000
    assert not any(b"Traceback" in line for line in lines)
    # and the hub still serves: bob's session is there and extends
    r = requests.post(f"{hub.url}/services/lifetimes/api/users/bob/server/extend", json={"hours": 0.1},
                      headers={"Authorization": f"token {bob}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert hub.api("GET", "/users/alice").json()["servers"] == {}
