"""Helpers for the virtual node tests: the plugin as a server process, the cluster with its node agent, kubectl,
polling."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane import build
from aifacility.facility.model import Facility
from aifacility.launcher.supervisor import Component, Supervisor
from aifacility_interlink.client import TOKEN_FILE_ENV
from aifacility_interlink.localslurm import LocalSlurm

VNODE = "vk-hpc-leonardo"
TOLERATION = {"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}
# Tests ping and poll often; the defaults (30 s, 5 s) are interLink's.
FAST = ["--ping-interval", "0.5", "--status-interval", "0.5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Plugin:
    """`aifacility-interlink serve --backend slurm --runtime bwrap --token-file F` in its own process (tests stop
    and restart it), answering only the holder of the token, as `aifacility up` starts it."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "plugin.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump({"delete_retry_seconds": 0.5}))
        self.token_file = workdir / "token"
        self.token_file.write_text(secrets.token_urlsafe(32) + "\n")
        self.token_file.chmod(0o600)
        self.log = workdir / "plugin.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Plugin:
        argv = [sys.executable, "-m", "aifacility_interlink", "serve", "--backend", "slurm", "--runtime", "bwrap",
                "--listen", f"127.0.0.1:{self.port}", "--data-root", str(self.workdir / "data"),
                "--config", str(self.config), "--token-file", str(self.token_file)]
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

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclasses.dataclass
class OffloadCluster:
    """The embedded control plane and Kueue, and the node agent running the virtual node against `plugin`."""

    embedded: EmbeddedCluster
    supervisor: Supervisor
    agent: Component

    @property
    def kubeconfig(self) -> Path:
        return self.embedded.plane.admin_kubeconfig

    def restart_agent(self, between: Callable[[], None] | None = None) -> None:
        """Stop the node agent, run `between` while it is down, and start it again."""
        self.agent.stop()
        if between is not None:
            between()
        self.agent.start()
        self.agent.wait_ready(60)


def node_agent(embedded: EmbeddedCluster, plugin: Plugin) -> Component:
    agent = embedded.node_agent(interlink={VNODE: plugin.url}, env={TOKEN_FILE_ENV: str(plugin.token_file)})
    return dataclasses.replace(agent, argv=[*agent.argv, *FAST, "--verbose"])


@contextlib.contextmanager
def offload_cluster(facility: Facility, state_dir: Path, plugin: Plugin) -> Iterator[OffloadCluster]:
    build.build(quiet=True)
    embedded = EmbeddedCluster(facility, state_dir)
    sup = Supervisor()
    try:
        for component in embedded.components(nodes=False):
            sup.start(component, timeout=120)
        agent = sup.start(node_agent(embedded, plugin), timeout=60)
        yield OffloadCluster(embedded, sup, agent)
    finally:
        sup.stop()


class Kubectl:
    """The real kubectl, as the cluster's admin, run as an async subprocess; in `namespace` unless the arguments
    name another (the admin's kubeconfig names the facility's)."""

    def __init__(self, kubeconfig: Path, namespace: str = "default") -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.binary = str(build.binary("kubectl"))
        self.namespace = namespace

    async def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.binary, f"--namespace={self.namespace}", *args, env=self.env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), 120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}")
        return out.decode() + ("" if check else err.decode())

    async def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        out = await self("get", kind, name, "-n", namespace, "-o", "json")
        obj: dict[str, Any] = json.loads(out)
        return obj

    async def get_list(self, kind: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(await self("get", kind, "-o", "json"))
        return obj

    async def apply(self, *objects: dict[str, Any]) -> None:
        await self("apply", "-f", "-", stdin="\n---\n".join(yaml.safe_dump(o) for o in objects))


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


def offload_pod(name: str, script: str, *, namespace: str = "default", init: str | None = None,
                mounts: dict[str, str] | None = None, env: list[dict[str, Any]] | None = None,
                **spec: Any) -> dict[str, Any]:
    """A pod for the virtual node: it tolerates the interLink taint and selects the node by name."""
    container: dict[str, Any] = {"name": "main", "image": "docker.io/library/busybox:1.36",
                                 "command": ["sh", "-c", script]}
    if mounts:
        container["volumeMounts"] = [{"name": k, "mountPath": v} for k, v in mounts.items()]
    if env:
        container["env"] = env
    body: dict[str, Any] = {"restartPolicy": "Never", "tolerations": [TOLERATION],
                            "nodeSelector": {"kubernetes.io/hostname": VNODE}, "containers": [container], **spec}
    if init is not None:
        body["initContainers"] = [{"name": "prepare", "image": "busybox", "command": ["sh", "-c", init]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": body}
