"""Secrets at rest and in the log of a real JupyterHub configured with `aifacility.secrecy.configure` (as
hub/jupyterhub_config.py does) and a spawner with the server-token record of FacilitySpawner (here over local
processes, which, like pods on Kubernetes, outlive a hub restart):

- the hub's database and cookie secret are 0600, and become so again after an older version left them 0644;
- no `jupyterhub-session-id` value reaches the hub's log (nor the notebook server's, which writes there too);
- a server that outlived a hub restart loses its API token when it stops: the hub no longer knew that token in
  memory, the spawner's saved state did.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.hub_process import HubProcess, free_port, wait_for

SINGLEUSER = Path(sys.executable).parent / "jupyterhub-singleuser"


class SecrecyHub(HubProcess):
    hub_port: int = 0

    def start(self) -> SecrecyHub:
        self.hub_port = self.hub_port or free_port()
        return self.launch(textwrap.dedent(f"""
            from jupyterhub.spawner import SimpleLocalProcessSpawner
            from aifacility.secrecy import configure as configure_secrecy
            from aifacility.spawner.tokens import ServerTokenMixin

            class TokenSpawner(ServerTokenMixin, SimpleLocalProcessSpawner):
                pass

            c.JupyterHub.hub_port = {self.hub_port}  # the same across restarts: running servers call it
            c.JupyterHub.authenticator_class = "dummy"
            c.Authenticator.allow_all = True
            c.JupyterHub.cleanup_servers = False
            c.JupyterHub.spawner_class = TokenSpawner
            c.SimpleLocalProcessSpawner.home_dir_template = "{self.workdir}/home/{{username}}"
            c.Spawner.cmd = ["{SINGLEUSER}"]
            c.Spawner.args = ["--allow-root", "--ServerApp.jpserver_extensions=aifacility.notebook=True"]
            c.Spawner.ip = "127.0.0.1"
            c.JupyterHub.services = [{{"name": "tester", "api_token": "{self.token}"}}]
            c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"], "scopes": [
                "admin:users", "admin:servers", "admin:server_state", "tokens"]}}]
            configure_secrecy(c)
        """))

    def restart(self) -> None:
        self.stop()  # SIGTERM; cleanup_servers is off, so the servers keep running
        self.start()

    def server_token(self, user: str) -> str:
        state = self.api("GET", f"/users/{user}").json()["servers"][""]["state"]
        environ = Path(f"/proc/{state['pid']}/environ").read_bytes().decode(errors="replace").split("\0")
        return next(v.split("=", 1)[1] for v in environ if v.startswith("JUPYTERHUB_API_TOKEN="))

    def start_server(self, user: str) -> None:
        if self.api("GET", f"/users/{user}").status_code == 404:
            self.api("POST", f"/users/{user}").raise_for_status()
        assert self.api("POST", f"/users/{user}/server").status_code in (201, 202)
        wait_for(lambda: (self.api("GET", f"/users/{user}").json()["servers"].get("") or {}).get("ready"), 90,
                 f"{user}'s server")

    def stop_server(self, user: str) -> None:
        self.api("DELETE", f"/users/{user}/server")
        wait_for(lambda: not self.api("GET", f"/users/{user}").json()["servers"], 60, f"{user}'s server to stop")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecrecyHub]:
    h = SecrecyHub(tmp_path_factory.mktemp("secrecy")).start()
    try:
        yield h
    finally:
        if h.proc is not None and h.proc.poll() is None:
            for user in h.api("GET", "/users").json():
                if user.get("servers"):
                    h.stop_server(user["name"])
        h.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _secret_files(hub: SecrecyHub) -> list[Path]:
    files = [*hub.workdir.glob("jupyterhub.sqlite*"), hub.workdir / "jupyterhub_cookie_secret"]
    assert hub.workdir / "jupyterhub.sqlite" in files and files[-1].exists()
    return files


def test_the_database_and_the_cookie_secret_are_the_hubs_alone(hub: SecrecyHub) -> None:
    assert all(mode(p) == 0o600 for p in _secret_files(hub)), {p.name: oct(mode(p)) for p in _secret_files(hub)}
    # what an older version left readable by everyone becomes private at the next start
    hub.stop()
    for path in _secret_files(hub):
        path.chmod(0o644)
    hub.start()
    assert all(mode(p) == 0o600 for p in _secret_files(hub)), {p.name: oct(mode(p)) for p in _secret_files(hub)}


def test_no_session_id_reaches_the_log(hub: SecrecyHub) -> None:
    browser = requests.Session()
    browser.get(f"{hub.url}/hub/login", timeout=30)
    browser.post(f"{hub.url}/hub/login?next=%2Fhub%2Fhome", timeout=30,
                 data={"username": "carol", "password": "x", "_xsrf": browser.cookies["_xsrf"]}).raise_for_status()
    hub.start_server("carol")
    try:
        # the notebook server signs the browser in through the hub (OAuth, tied to the hub session)
        r = browser.get(f"{hub.url}/user/carol/lab", timeout=60)
        assert r.status_code == 200 and "/user/carol/" in r.url, r.url
        session_id = browser.cookies.get("jupyterhub-session-id")
        assert session_id and re.fullmatch(r"[0-9a-f]{32}", session_id)
        # both the hub and the server have logged the session's xsrf cookies, redacted
        wait_for(lambda: hub.log().count("Setting new xsrf cookie for b'[redacted]:") >= 2, 10,
                 "the xsrf cookie messages of the hub and of the server")
        log = hub.log()
        assert session_id not in log
    finally:
        hub.stop_server("carol")


def _token_rows(hub: SecrecyHub, note: str) -> int:
    with sqlite3.connect(f"file:{hub.workdir / 'jupyterhub.sqlite'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM api_tokens WHERE note = ?", (note,)).fetchone()[0])


def test_a_server_that_outlived_a_hub_restart_loses_its_token_when_it_stops(hub: SecrecyHub) -> None:
    hub.start_server("bob")
    token = hub.server_token("bob")
    assert hub.api("GET", "/user", token=token).status_code == 200
    hub.restart()
    wait_for(lambda: (hub.api("GET", "/users/bob").json()["servers"].get("") or {}).get("ready"), 60,
             "bob's server, found running again")
    assert hub.server_token("bob") == token  # the same process, with the token it was started with
    assert hub.api("GET", "/user", token=token).status_code == 200
    hub.stop_server("bob")
    assert hub.api("GET", "/user", token=token).status_code == 403
    assert _token_rows(hub, "Server at /user/bob/") == 0
    assert "Revoking the API token of bob's ended server" in hub.log()
