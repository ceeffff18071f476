"""Run the embedded facility (`aifacility up`) as a user would, in a temporary state directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from kubernetes import client, config

from aifacility.launcher.supervisor import free_port
from support.hub_process import wait_for as wait_for  # the e2e tests import it from here


@dataclass
class RunningFacility:
    state_dir: Path
    port: int
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of `aifacility up`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def core_api(self) -> client.CoreV1Api:
        """The Kubernetes core API as the facility's admin (the state directory's kubeconfig)."""
        return client.CoreV1Api(config.new_client_from_config(config_file=str(self.kubeconfig)))

    @property
    def admin_token(self) -> str:
        return (self.state_dir / "secrets" / "admin-api-token").read_text().strip()

    def api(self, method: str, path: str, **kw: object) -> requests.Response:
        headers = {"Authorization": f"token {self.admin_token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    def start(self, timeout: float = 180) -> RunningFacility:
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        log = (self.state_dir.parent / f"up-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aifacility.cli", "up", "--state-dir", str(self.state_dir),
             "--port", str(self.port), *self.extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            log.write(line)
            log.flush()
            self.output.append(line)
            if re.search(r"is ready at http", line):
                # keep draining output in the background so the pipe never fills up
                import threading

                def drain() -> None:
                    assert self.proc is not None and self.proc.stdout is not None
                    for rest in self.proc.stdout:
                        self.output.append(rest)
                        log.write(rest)
                        log.flush()

                threading.Thread(target=drain, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("aifacility up did not become ready:\n" + "".join(self.output[-40:]))

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start_facility(base: Path, *extra_args: str, port: int | None = None,
                   env: dict[str, str] | None = None) -> RunningFacility:
    state = base / "state"
    return RunningFacility(state_dir=state, port=port or free_port(), extra_args=extra_args,
                           env=dict(env or {})).start()
