"""A real JupyterHub (SimpleLocalProcessSpawner, DummyAuthenticator, configurable-http-proxy) configured by
`aifacility.lifetimes.configure`, with a facility whose lifetimes are seconds long (a uniquely named module:
every test area has its own conftest.py, so `from conftest import ...` could pick up another area's)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from aifacility.launcher.supervisor import free_port

# Lifetimes in hours: "short" lives ~22 s and may be extended to ~43 s; "gpu" is culled after 9 s idle.
FACILITY = """
name: lifetimes-test
accelerators:
  - {name: a100, kind: gpu, display_name: "NVIDIA A100", resource: nvidia.com/gpu}
images:
  - {name: py, display_name: Python, image: "python:3.11"}
profiles:
  - {name: cpu, display_name: CPU, images: [py], default: true, lifetime_hours: 1, max_lifetime_hours: 3}
  - {name: short, display_name: Short, images: [py], lifetime_hours: 0.006, max_lifetime_hours: 0.012}
  - {name: gpu, display_name: GPU, images: [py], accelerator: {name: a100},
     lifetime_hours: 1, max_lifetime_hours: 2, idle_timeout_minutes: 0.15}
sessions:
  warn_before_minutes: 0.2
  extend_step_hours: 0.01
  check_every_seconds: 1
"""


@dataclass
class LifetimesHub:
    workdir: Path
    port: int
    token: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)

    def lifetimes(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}/services/lifetimes/api{path}", headers=headers,
                                timeout=30, **kw)

    def user_token(self, user: str) -> str:
        """A user's own API token (the scopes of their roles), as a user gets from /hub/token."""
        self.ensure_user(user)
        r = self.api("POST", f"/users/{user}/tokens", json={"note": "lifetimes test"})
        r.raise_for_status()
        return str(r.json()["token"])

    def ensure_user(self, user: str) -> None:
        if self.api("GET", f"/users/{user}").status_code == 404:
            self.api("POST", f"/users/{user}").raise_for_status()

    def start_server(self, user: str, profile: str, timeout: float = 60) -> dict[str, Any]:
        self.ensure_user(user)
        r = self.api("POST", f"/users/{user}/server", json={"profile": profile})
        assert r.status_code in (201, 202), r.text
        return wait_for(lambda: self.server(user) if (self.server(user) or {}).get("ready") else None,
                        timeout, f"{user}'s server to be ready")

    def server(self, user: str) -> dict[str, Any] | None:
        servers = self.api("GET", f"/users/{user}").json().get("servers", {})
        return servers.get("")

    def log(self) -> str:
        return (self.workdir / "hub.log").read_text(errors="replace")

    def stop(self, servers: bool = True) -> None:
        if servers and self.proc and self.proc.poll() is None:
            # the hub keeps servers across restarts (cleanup_servers=False): stop them explicitly
            for user in self.api("GET", "/users").json():
                for name in user.get("servers", {}):
                    self.api("DELETE", f"/users/{user['name']}/servers/{name}" if name
                             else f"/users/{user['name']}/server")
            wait_for(lambda: not any(u.get("servers") for u in self.api("GET", "/users").json()), 60,
                     "the servers to stop")
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")


def start_hub(workdir: Path, token: str | None = None) -> LifetimesHub:
    """Start (or restart, same `workdir` and `token`) the hub; servers outlive a restart, as on Kubernetes."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "facility.yaml").write_text(FACILITY)
    hub = LifetimesHub(workdir=workdir, port=free_port(), token=token or secrets.token_hex(16))
    singleuser = Path(sys.executable).parent / "jupyterhub-singleuser"
    (workdir / "jupyterhub_config.py").write_text(textwrap.dedent(f"""
        from aifacility.facility import load_facility
        from aifacility.lifetimes import configure

        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {hub.port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {free_port()}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
        c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
        c.JupyterHub.cleanup_servers = False
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{"admin"}}
        c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
        c.SimpleLocalProcessSpawner.home_dir_template = "{workdir}/home/{{username}}"
        c.Spawner.cmd = ["{singleuser}"]
        c.Spawner.args = ["--allow-root"]  # configure() adds the in-session notice
        c.Spawner.ip = "127.0.0.1"
        c.JupyterHub.services = [{{"name": "tester", "api_token": "{hub.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "tester", "scopes": ["admin:users", "admin:servers", "tokens"],
                                     "services": ["tester"]}}]
        configure(c, load_facility("{workdir}/facility.yaml"), data_dir="{workdir}/data", port={free_port()})
    """))
    log = (workdir / "hub.log").open("ab")
    hub.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"], cwd=workdir,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        try:
            hub_ok = requests.get(f"{hub.url}/hub/health", timeout=2).status_code == 200
            # the service answers 403 to an anonymous API call once it listens behind the proxy
            svc = requests.get(f"{hub.url}/services/lifetimes/api/users/x", timeout=2).status_code
            return hub_ok and svc == 403
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 60, "the hub and the lifetimes service")
    except AssertionError:
        hub.stop()
        raise AssertionError(f"the hub did not start:\n{hub.log()[-4000:]}") from None
    return hub
