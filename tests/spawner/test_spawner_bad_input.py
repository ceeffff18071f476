"""Bad spawn options against a real JupyterHub with FacilitySpawner: every one is answered with a 400 (413 when
too large) and a message a person can act on, never a 5xx or a traceback; nothing of the spawn is stored (no
server row, no server API token, no saved options), and the hub's database does not grow from them.

The hub's kubeconfig points at a closed loopback port: a refused spawn must never get as far as Kubernetes.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from aifacility.facility.loader import demo_facility_path
from support.hub_process import HubProcess, free_port

MB = 1024 * 1024


@dataclass
class RestartableHub(HubProcess):
    config: str = ""
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableHub]:
    work = tmp_path_factory.mktemp("badinput")
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{free_port()}"}}}}]
        users: [{{name: u, user: {{token: x}}}}]
        contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
        current-context: c
        """))
    h = RestartableHub(work)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    h.env = env
    h.config = textwrap.dedent(f"""
        from aifacility.facility import load_facility
        from aifacility.spawner import configure
        configure(c, load_facility({str(demo_facility_path())!r}), facility_path={str(demo_facility_path())!r},
                  data_dir={str(work)!r})
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.JupyterHub.allow_named_servers = True
        c.JupyterHub.services = [{{"name": "tester", "api_token": "{h.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
                                     "scopes": ["admin:users", "admin:servers", "admin:groups"]}}]
    """)
    h.launch(h.config, env=h.env)
    try:
        for u in ("alice", "bob"):
            h.api("POST", f"/users/{u}")
        r = h.api("POST", "/groups/physics", json={"users": ["alice", "bob"]})
        assert r.status_code in (201, 409), r.text
        yield h
    finally:
        h.stop(timeout=20)


def _db(hub: HubProcess) -> Path:
    return hub.workdir / "jupyterhub.sqlite"


def _stored(hub: HubProcess) -> dict[str, Any]:
    """What a spawn would leave in the hub's database: tokens, server rows, saved options."""
    with sqlite3.connect(f"file:{_db(hub)}?mode=ro", uri=True) as db:
        return {
            "tokens": db.execute("SELECT id, note FROM api_tokens ORDER BY id").fetchall(),
            "servers": db.execute("SELECT count(*) FROM servers").fetchone()[0],
            "spawners": db.execute("SELECT user_id, name, user_options FROM spawners ORDER BY id").fetchall(),
        }


def _db_bytes(hub: HubProcess) -> int:
    return sum(p.stat().st_size for p in hub.workdir.glob("jupyterhub.sqlite*"))


def _post(hub: HubProcess, path: str, body: bytes | str) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return requests.post(f"{hub.url}/hub/api{path}", data=data, timeout=120,
                         headers={"Authorization": f"token {hub.token}", "Content-Type": "application/json"})


# (body, expected status, a phrase the message must hold)
NOT_OBJECTS = [
    ("[1,2,3]", "must be a JSON object, not a list"),
    ("null", "must be a JSON object, not null"),
    ('"cpu-small"', "must be a JSON object, not a string ('cpu-small')"),
    ("42", "must be a JSON object, not a number"),
    ("true", "must be a JSON object, not a boolean"),
]
BAD_OPTIONS = [
    ('{"profile": "cpu-small", "image": "python", "gpus": 8}', "Unknown spawn option(s) 'gpus'"),
    ('{"profile": 5}', "'profile' must be a name (a string), not a number"),
    ('{"profile": "cpu-small", "image": ["a"]}', "'image' must be a name (a string), not a list"),
    ('{"profile": "gpu-t4", "queue": "false"}', "'queue' must be true or false (a JSON boolean), not a string"),
    ('{"profile": "gpu-t4", "queue": -1}', "'queue' must be true or false (a JSON boolean), not a number"),
    ('{"profile": "gpu-t4", "queue": null}', "'queue' must be true or false"),
    ('{"profile": "cpu-small"', "not valid JSON"),
    ("[" * 5000 + "]" * 5000, "not valid JSON (nested too deeply)"),
    ('{"profile": "' + "x" * 5000 + '"}', "'profile' is 5000 characters long; profile names have at most 200"),
    ('{"profile": "no-such-profile"}', "There is no profile 'no-such-profile'. Choose one of: cpu-small"),
    ('{"profile": "mig-1g-10gb"}', "'mig-1g-10gb' is only open to the group(s) ml"),
    ('{"profile": "cpu-small", "image": "nope"}', "offers the image(s)"),
    ('{"profile": "cpu-small", "queue": true}', "cannot wait in a queue"),
]


def _assert_refusal(r: requests.Response, status: int, phrase: str) -> str:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert "Traceback" not in r.text and "TraitError" not in r.text
    message = str(r.json()["message"])
    assert phrase in message, message
    return message


@pytest.mark.parametrize(("body", "phrase"), NOT_OBJECTS + BAD_OPTIONS)
def test_a_bad_spawn_body_is_a_400_that_says_what_to_send_and_stores_nothing(hub: HubProcess, body: str,
                                                                          phrase: str) -> None:
    before = _stored(hub)
    for path in ("/users/bob/server", "/users/bob/servers/lab"):
        _assert_refusal(_post(hub, path, body), 400, phrase)
    assert _stored(hub) == before
    assert hub.api("GET", "/users/bob").json()["servers"] == {}


def test_known_options_are_named_when_an_unknown_one_is_refused(hub: HubProcess) -> None:
    message = _assert_refusal(_post(hub, "/users/bob/server", '{"profil": "cpu-small"}'), 400, "'profil'")
    assert "the options are profile, image, queue" in message


def test_a_huge_profile_name_is_neither_echoed_nor_logged_in_full(hub: HubProcess) -> None:
    name = "p" * MB
    before, size = _stored(hub), _db_bytes(hub)
    log_size = hub.log_path.stat().st_size
    message = _assert_refusal(_post(hub, "/users/bob/server", json.dumps({"profile": name})), 413,
                              "at most 16384 are accepted")
    assert len(message) < 500 and "ppppp" not in message
    # the same name small enough to pass the body limit, too long for a name: quoted, shortened
    name = "q" * 10000
    message = _assert_refusal(_post(hub, "/users/bob/server", json.dumps({"profile": name})), 400,
                              "'profile' is 10000 characters long")
    assert len(message) < 500 and "(10000 characters)" in message
    assert _stored(hub) == before and _db_bytes(hub) <= size
    with hub.log_path.open("rb") as log:
        log.seek(log_size)
        lines = log.read().splitlines()
    assert lines and max(len(line) for line in lines) < 2000
    assert not any(b"ppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp" in line
                   for line in lines)


def test_an_8_mb_unknown_field_is_refused_and_the_database_does_not_grow(hub: HubProcess) -> None:
    before, size = _stored(hub), _db_bytes(hub)
    body = json.dumps({"profile": "cpu-small", "notes": "n" * (8 * MB)})
    message = _assert_refusal(_post(hub, "/users/alice/server", body), 413, "at most 16384 are accepted")
    assert str(len(body.encode())) in message
    assert _stored(hub) == before
    assert _db_bytes(hub) <= size, (size, _db_bytes(hub))


def _login(hub: HubProcess, user: str) -> tuple[requests.Session, str]:
    """A browser session of `user`, and the XSRF token of its spawn form."""
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    xsrf = s.cookies.get("_xsrf", path="/hub/") or s.cookies.get("_xsrf") or ""
    r = s.post(f"{hub.url}/hub/login", data={"username": user, "password": "x", "_xsrf": xsrf}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    form = s.get(f"{hub.url}/hub/spawn", timeout=60).text
    found = re.search(r'xsrf_token: "([^"]+)"', form)
    assert found, form[:500]
    return s, found.group(1)


@pytest.mark.parametrize(("fields", "status", "phrase"), [
    ({"profile": "cpu-small", "profile-option-cpu-small--gpus": "8"}, 400, "Unknown spawn option(s) 'gpus'"),
    ({"profile": "r" * 5000}, 400, "'profile' is 5000 characters long"),
    ({"profile": "cpu-small", "profile-option-cpu-small--image": "i" * (64 * 1024)}, 413,
     "Choose a profile from the form and submit it again"),
])
def test_a_bad_form_is_shown_again_with_the_reason_and_stores_nothing(hub: HubProcess, fields: dict[str, str],
                                                                     status: int, phrase: str) -> None:
    session, xsrf = _login(hub, "bob")
    before = _stored(hub)
    r = session.post(f"{hub.url}/hub/spawn", data={**fields, "_xsrf": xsrf}, timeout=60)
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert "Traceback" not in r.text
    assert phrase in r.text.replace("&#39;", "'")
    assert re.search(r'value="cpu-small"', r.text)  # the form again, to choose from
    assert len(r.text) < 64 * 1024
    assert _stored(hub) == before


def test_the_form_queue_checkbox_becomes_a_boolean(hub: HubProcess) -> None:
    """A ticked queue box passes the shape check (it arrives as the string "true"); what follows is the
    profile check, before anything is stored too: cpu-small cannot wait in a queue."""
    session, xsrf = _login(hub, "bob")
    before = _stored(hub)
    r = session.post(f"{hub.url}/hub/spawn", timeout=60, data={
        "profile": "cpu-small", "profile-option-cpu-small--queue": "true", "_xsrf": xsrf})
    assert r.status_code == 400, r.text[:500]
    assert "cannot wait in a queue" in r.text
    assert _stored(hub) == before


def test_options_a_hub_without_these_checks_saved_are_dropped_not_half_spawned(hub: RestartableHub) -> None:
    """Before these checks, a refused body stayed saved as the server's options: JupyterHub could then not even
    build the server's spawner, and a spawn without a body (what the spawn keeper sends) re-uses saved options."""
    hub.stop()
    with sqlite3.connect(_db(hub)) as db:
        db.execute("UPDATE spawners SET user_options = ? WHERE name = '' AND user_id = "
                   "(SELECT id FROM users WHERE name = 'alice')", ("[1, 2, 3]",))
    hub.launch(hub.config, env=hub.env)
    before = _stored(hub)
    r = hub.api("POST", "/users/alice/server")
    _assert_refusal(r, 400, "The options saved at this server's previous spawn were not an object and have been "
                            "dropped; send the options")
    after = _stored(hub)
    assert after["tokens"] == before["tokens"] and after["servers"] == before["servers"]
    assert [row[2] for row in after["spawners"] if row[1] == ""] == [None, None]  # alice's and bob's
    # and the server is usable again: options sent with the request are checked as usual
    _assert_refusal(_post(hub, "/users/alice/server", '{"profile": "mig-7g-80gb", "queue": true}'), 400,
                    "There is no profile")
    assert hub.api("GET", "/users/alice").status_code == 200
    assert _stored(hub) == after
