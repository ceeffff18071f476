"""Start, watch and stop the facility's processes, leaving none behind.

Each component runs in its own session (process group) so that stopping it also stops what it started
(JupyterHub starts configurable-http-proxy; the node agent starts the pods' processes).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class LaunchError(Exception):
    """A component could not start; the message says which and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Component:
    name: str
    argv: Sequence[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(self.argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, cwd=self.cwd, start_new_session=True,
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise LaunchError(f"{self.name} exited with code {self.proc.returncode} while starting; "
                                  f"last lines of {self.log}:\n{tail(self.log)}")
            if self.ready is None or self.ready():
                return
            time.sleep(0.1)
        raise LaunchError(f"{self.name} did not become ready within {timeout:.0f} s; "
                          f"last lines of {self.log}:\n{tail(self.log)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def hub_env(self) -> dict[str, str]:
        """Environment the hub needs to reach this component (none by default)."""
        return {}

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the component, then SIGKILL its whole process group if it lingers."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def http_ok(url: str, accept: Callable[[int], bool] = lambda code: code < 500) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return accept(r.status)
        except urllib.error.HTTPError as e:
            return accept(e.code)
        except (urllib.error.URLError, OSError):
            return False
    return check


class Supervisor:
    """Components started in order and stopped in reverse order."""

    def __init__(self) -> None:
        self.components: list[Component] = []

    def start(self, component: Component, timeout: float = 60.0) -> Component:
        self.components.append(component)
        component.start()
        component.wait_ready(timeout)
        return component

    def restart(self, component: Component, timeout: float = 60.0) -> Component:
        """Start a component that exited again, in its place in the stopping order."""
        component.stop()  # reap it, and whatever it left in its process group
        component.start()
        component.wait_ready(timeout)
        return component

    def first_dead(self) -> Component | None:
        return next((c for c in self.components if not c.alive()), None)

    def stop(self) -> None:
        for c in reversed(self.components):
            c.stop()
        self.components.clear()
