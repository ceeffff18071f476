"""A real JupyterHub in a subprocess on free loopback ports, for the tests and the benchmarks: write its
jupyterhub_config.py, start it, wait until /hub/health answers, call its REST API, stop it.

The caller's config says what the hub is for (authenticator, spawner, services and the API token's scopes);
`HubProcess.launch` adds where it listens: `port` for the proxy, fresh ports for the hub and the proxy's API.
Harnesses with more to do (a service to wait for, users to clean up) subclass `HubProcess`.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import requests

from aifacility.launcher.supervisor import free_port


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition",
             interval: float = 0.2) -> Any:
    """Call `predicate` until it returns something true and return that; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def terminate(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM the process group of `proc` (started with start_new_session=True); SIGKILL it after `timeout` s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class HubProcess:
    """A JupyterHub run from `workdir` (its config, database and hub.log), reached at `url` with API `token`."""

    workdir: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "hub.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        """A hub REST API call (`path` below /hub/api) with the service token, or with `token`."""
        kw.setdefault("timeout", 60)
        return requests.request(method, f"{self.url}/hub/api{path}",
                                headers={"Authorization": f"token {token or self.token}"}, **kw)

    def launch(self, config: str, env: Mapping[str, str] | None = None, timeout: float = 90) -> Self:
        """Write `config` (after the listening addresses) to jupyterhub_config.py, start the hub with `env`
        (default: this process's), its output appended to hub.log; return once /hub/health answers 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "jupyterhub_config.py").write_text(f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {free_port()}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
""" + config)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"],
                                         cwd=self.workdir, env=None if env is None else dict(env), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._healthy, timeout, f"the hub in {self.workdir} to answer")
        except (AssertionError, RuntimeError) as e:
            terminate(self.proc)
            raise RuntimeError(f"{e}; {self.log_path}:\n{self.log()[-3000:]}") from None
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"jupyterhub exited with status {self.proc.returncode}")
        try:
            return requests.get(f"{self.url}/hub/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self, timeout: float = 30) -> None:
        """Stop the hub (it stops its proxy and services; servers too if cleanup_servers is on)."""
        if self.proc is not None:
            terminate(self.proc, timeout)
