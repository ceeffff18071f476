"""Helpers for the virtual node tests: the plugin as a server process, kubectl, polling."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from aifacility_interlink.localslurm import LocalSlurm

VNODE = "vk-hpc-leonardo"
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Plugin:
    """`aifacility-interlink serve --backend slurm --runtime bwrap` in its own process (tests stop and restart it)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "plugin.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump({"delete_retry_seconds": 0.5}))
        self.log = workdir / "plugin.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Plugin:
        argv = [sys.executable, "-m", "aifacility_interlink", "serve", "--backend", "slurm", "--runtime", "bwrap",
                "--listen", f"127.0.0.1:{self.port}", "--data-root", str(self.workdir / "data"),
                "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the plugin exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the plugin did not listen within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    async def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            "kubectl", *args, env=self.env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), 120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}")
        return out.decode() + ("" if check else err.decode())

    async def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        out = await self("get", kind, name, "-n", namespace, "-o", "json")
        obj: dict[str, Any] = json.loads(out)
        return obj


async def until(check: Callable[[], Any], seconds: float = 90, every: float = 0.3) -> Any:
    """Poll an async or sync check until it returns something truthy."""
    async with asyncio.timeout(seconds):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(every)


def squeue(slurm: LocalSlurm, jid: str) -> str:
    """The job's state while SLURM lists it as pending or running ('' once it is gone from the queue)."""
    return subprocess.run(["squeue", "-h", "-j", jid, "-o", "%T"], env=slurm.env(), capture_output=True,
                          text=True, check=False).stdout.strip()
