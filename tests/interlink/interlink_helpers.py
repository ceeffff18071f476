"""Helpers for the interLink plugin tests: pod builders, the plugin as a server process, polling."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from aifacility_interlink.client import PluginClient
from aifacility_interlink.localslurm import LocalSlurm

PLUGIN = [sys.executable, "-m", "aifacility_interlink.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PluginProcess:
    """`aifacility-interlink serve` in its own process, so tests can SIGKILL and restart it."""

    def __init__(self, data_root: Path, env: dict[str, str], runtime: str, config: dict[str, Any],
                 auth: bool = True) -> None:
        self.data_root = data_root
        self.env = env
        self.runtime = runtime
        # As the virtual kubelet does: a token file the plugin reads and the client sends (auth=False: none).
        self.token: str | None = None
        if auth:
            self.token = secrets.token_hex(32)
            token_file = data_root.parent / f"{data_root.name}-token"
            token_file.touch(mode=0o600)
            token_file.write_text(self.token + "\n")
            config = {"token_file": str(token_file), **config}
        self.config_file = data_root.parent / f"{data_root.name}-config.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_root.parent / f"{data_root.name}-server.log"

    def start(self) -> PluginProcess:
        argv = [*PLUGIN, "serve", "--backend", "slurm", "--listen", f"127.0.0.1:{self.port}",
                "--data-root", str(self.data_root), "--runtime", self.runtime,
                "--config", str(self.config_file)]
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("plugin did not listen within 30 s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def client(self) -> PluginClient:
        return PluginClient(self.url, self.token)

    def access_log(self) -> list[dict[str, str]]:
        """The plugin's access-log lines, each as its key=value fields."""
        return [access_fields(line) for line in self.log.read_text().splitlines()
                if " aifacility_interlink.access: " in line]


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def access_fields(line: str) -> dict[str, str]:
    return {k: v[1:-1].replace('\\"', '"') if v.startswith('"') else v
            for k, v in _PAIR.findall(line.split(": ", 1)[1])}


def container(name: str, script: str, mounts: list[tuple[str, str]] | None = None,
              limits: dict[str, str] | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "docker.io/library/busybox:1.36", "command": ["sh", "-c", script]}
    if mounts:
        c["volumeMounts"] = [{"name": n, "mountPath": p} for n, p in mounts]
    if limits:
        c["resources"] = {"limits": limits}
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return c


def pod(name: str, containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None,
        volumes: list[dict[str, Any]] | None = None, annotations: dict[str, str] | None = None,
        namespace: str = "physics", uid: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
                         "annotations": annotations or {}},
            "spec": spec}


def retrieved(p: dict[str, Any], config_maps: dict[str, dict[str, str]] | None = None,
              secrets: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """RetrievedPodData as interLink sends it: each container with the config maps/secrets it mounts."""
    cms = [{"metadata": {"name": n, "namespace": p["metadata"]["namespace"]}, "data": d}
           for n, d in (config_maps or {}).items()]
    secs = [{"metadata": {"name": n, "namespace": p["metadata"]["namespace"]},
             "data": {k: base64.b64encode(v.encode()).decode() for k, v in d.items()}}
            for n, d in (secrets or {}).items()]
    out = []
    spec = p["spec"]
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        mounted = {m["name"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        cm_names = {vols[m]["configMap"]["name"] for m in mounted if "configMap" in vols.get(m, {})}
        sec_names = {vols[m]["secret"]["secretName"] for m in mounted if "secret" in vols.get(m, {})}
        out.append({"name": c["name"],
                    "configMaps": [x for x in cms if x["metadata"]["name"] in cm_names],
                    "secrets": [x for x in secs if x["metadata"]["name"] in sec_names],
                    "projectedvolumemaps": [], "emptyDirs": []})
    return {"pod": p, "container": out}


async def wait_for(client: PluginClient, pods: list[dict[str, Any]], done: Callable[[Any], bool],
                   within: float = 90.0) -> list[Any]:
    """Poll /status until `done(status)` holds for every pod; returns the last statuses."""
    deadline = time.monotonic() + within
    while True:
        statuses = await client.status(pods)
        if all(done(s) for s in statuses):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last statuses: {[s.model_dump() for s in statuses]}")
        await asyncio.sleep(0.5)


def finished(s: Any) -> bool:
    return bool(s.containers) and all(c.state.terminated is not None for c in s.containers)


def running(s: Any) -> bool:
    return any(c.state.running is not None for c in s.containers)


def squeue(slurm: LocalSlurm, *args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], env=slurm.env(), capture_output=True, text=True,
                          check=True).stdout


def scontrol_job(slurm: LocalSlurm, jid: str) -> str:
    return subprocess.run(["scontrol", "show", "job", jid], env=slurm.env(), capture_output=True, text=True,
                          check=True).stdout


def sbatch_wrap(slurm: LocalSlurm, name: str, command: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", f"--job-name={name}", "--output=/dev/null", "--wrap", command],
                         env=slurm.env(), capture_output=True, text=True, check=True, cwd="/tmp").stdout
    return out.strip().split(";")[0]


def sbatch_script(slurm: LocalSlurm, script: Path) -> str:
    out = subprocess.run(["sbatch", "--parsable", str(script)], env=slurm.env(), capture_output=True, text=True,
                         check=True, cwd="/tmp").stdout
    return out.strip().split(";")[0]
