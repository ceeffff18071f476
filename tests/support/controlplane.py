"""Start the embedded cluster (the real control plane, Kueue and the node agent) for tests, and drive it with
kubectl: its objects, pods' phases and events, and restarts of the node agent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane import build
from aifacility.facility import load_facility
from aifacility.launcher.supervisor import Component, Supervisor

T = TypeVar("T")


def wait_for(what: Callable[[], T], timeout: float = 30, interval: float = 0.2, message: str = "") -> T:
    """`what()`'s first truthy value, polled every `interval` seconds for at most `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message or what}")
        time.sleep(interval)


@dataclass
class Cluster:
    embedded: EmbeddedCluster
    state_dir: Path
    supervisor: Supervisor | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.embedded.plane.admin_kubeconfig

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc

    def kubectl_popen(self, *args: str) -> subprocess.Popen[str]:
        """kubectl in the background (`logs -f`, `get -w`), its output as text pipes."""
        return subprocess.Popen([str(build.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def get(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "-o", "json", *args).stdout))

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input="\n".join(json.dumps(o) for o in objects))

    # ---- pods ------------------------------------------------------------------------------------------------

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get("pod", "-n", namespace, name)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Events about the object called `name` in `namespace`."""
        items = self.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
        return list(items)

    def wait_phase(self, namespace: str, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        """The pod once its phase is one of `phases` (its status and events in the failure otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self.pod(namespace, name)
            if (pod.get("status") or {}).get("phase") in phases:
                return pod
            if time.monotonic() > deadline:
                reasons = [(e["reason"], e["message"]) for e in self.events(namespace, name)]
                raise AssertionError(f"pod {namespace}/{name} not in {phases}: {pod.get('status')}\n{reasons}")
            time.sleep(0.2)

    def gone(self, kind: str, namespace: str, name: str) -> bool:
        return self.kubectl("get", kind, "-n", namespace, name, check=False).returncode != 0

    # ---- the node agent --------------------------------------------------------------------------------------

    @property
    def node_agent(self) -> Component:
        assert self.supervisor is not None
        return next(c for c in self.supervisor.components if c.name == "node agent")

    def stop_node_agent(self, *, kill: bool = False) -> None:
        """Stop the node agent: SIGTERM (it stops its pods, as a kubelet going down), or SIGKILL (no chance to)."""
        agent = self.node_agent
        assert agent.proc is not None
        if kill:
            os.killpg(agent.proc.pid, signal.SIGKILL)
        agent.stop()

    def start_node_agent(self) -> None:
        agent = self.node_agent
        agent.start()
        agent.wait_ready(120)


@contextlib.contextmanager
def start_cluster(state_dir: Path) -> Iterator[Cluster]:
    build.build(quiet=True)
    embedded = EmbeddedCluster(load_facility(None), state_dir)
    sup = Supervisor()
    try:
        for component in embedded.components():
            sup.start(component, timeout=120)
        yield Cluster(embedded, state_dir, sup)
    finally:
        sup.stop()


class _Shared:
    cluster: Cluster | None = None
    stack: contextlib.ExitStack | None = None
    users = 0


@contextlib.contextmanager
def shared_cluster(tmp_path_factory: Any) -> Iterator[Cluster]:
    """One embedded cluster for every folder's session fixture (each node's kubelet endpoint has a fixed address,
    so two cannot run side by side): started by the first, stopped when the last is done with it."""
    if _Shared.users == 0:
        stack = contextlib.ExitStack()
        _Shared.cluster = stack.enter_context(start_cluster(tmp_path_factory.mktemp("controlplane")))
        _Shared.stack = stack
    _Shared.users += 1
    try:
        assert _Shared.cluster is not None
        yield _Shared.cluster
    finally:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.stack is not None:
            _Shared.stack.close()
            _Shared.cluster = _Shared.stack = None
