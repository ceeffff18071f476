"""A stock JupyterHub (SimpleLocalProcessSpawner, DummyAuthenticator): the baseline our facility is measured against."""

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

import requests

from aifacility.launcher.supervisor import free_port


@dataclass
class VanillaHub:
    workdir: Path
    port: int
    token: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, **kw: object) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_vanilla_hub(workdir: Path) -> VanillaHub:
    workdir.mkdir(parents=True, exist_ok=True)
    hub = VanillaHub(workdir=workdir, port=free_port(), token=secrets.token_hex(16))
    (workdir / "jupyterhub_config.py").write_text(textwrap.dedent(f"""
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {hub.port}
        c.JupyterHub.hub_port = {free_port()}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
        c.SimpleLocalProcessSpawner.home_dir_template = "{workdir}/home/{{username}}"
        c.Spawner.cmd = ["{Path(sys.executable).parent / 'jupyterhub-singleuser'}"]
        c.Spawner.args = ["--allow-root"]
        c.Spawner.default_url = "/lab"
        c.JupyterHub.services = [{{"name": "bench", "api_token": "{hub.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers", "tokens"],
                                     "services": ["bench"]}}]
    """))
    log = (workdir / "hub.log").open("wb")
    hub.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"], cwd=workdir,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{hub.url}/hub/health", timeout=2).status_code == 200:
                return hub
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    hub.stop()
    raise RuntimeError(f"the vanilla hub did not start; see {workdir / 'hub.log'}")
