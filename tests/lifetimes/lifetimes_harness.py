"""A real JupyterHub (SimpleLocalProcessSpawner, DummyAuthenticator, configurable-http-proxy) configured by
`aifacility.lifetimes.configure`, with a facility whose lifetimes are seconds long (a uniquely named module:
every test area has its own conftest.py, so `from conftest import ...` could pick up another area's)."""

from __future__ import annotations

import secrets
import sys
import textwrap
from pathlib import Path
from typing import Any

import requests

from aifacility.launcher.supervisor import free_port
from support.hub_process import HubProcess, wait_for

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


class LifetimesHub(HubProcess):
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

    def stop(self, timeout: float = 30, servers: bool = True) -> None:
        if servers and self.proc and self.proc.poll() is None:
            # the hub keeps servers across restarts (cleanup_servers=False): stop them explicitly
            for user in self.api("GET", "/users").json():
                for name in user.get("servers", {}):
                    self.api("DELETE", f"/users/{user['name']}/servers/{name}" if name
                             else f"/users/{user['name']}/server")
            wait_for(lambda: not any(u.get("servers") for u in self.api("GET", "/users").json()), 60,
                     "the servers to stop")
        super().stop(timeout)


def start_hub(workdir: Path, token: str | None = None) -> LifetimesHub:
    """Start (or restart, same `workdir` and `token`) the hub; servers outlive a restart, as on Kubernetes."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "facility.yaml").write_text(FACILITY)
    hub = LifetimesHub(workdir, token=token or secrets.token_hex(16))
    singleuser = Path(sys.executable).parent / "jupyterhub-singleuser"
    hub.launch(textwrap.dedent(f"""
        from aifacility.facility import load_facility
        from aifacility.lifetimes import configure

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
    """), timeout=60)

    def service_up() -> bool:
        # the service answers 403 to an anonymous API call once it listens behind the proxy
        try:
            return requests.get(f"{hub.url}/services/lifetimes/api/users/x", timeout=2).status_code == 403
        except requests.ConnectionError:
            return False

    try:
        wait_for(service_up, 60, "the lifetimes service")
    except AssertionError:
        hub.stop()
        raise AssertionError(f"the lifetimes service did not start:\n{hub.log()[-4000:]}") from None
    return hub
