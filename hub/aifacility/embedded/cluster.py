"""The embedded cluster as supervised components, in start order: the control plane, its bootstrap, Kueue, and
the facility's own objects (namespace, hub identity and RBAC, Kueue queues).

    components = cluster_components(facility, state_dir)
    for c in components: supervisor.start(c)

Each one-shot step (`Step`) is a component whose start() does its work and returns; it is "alive" ever after,
so that the supervisor's watch only looks at processes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from aifacility.embedded.controlplane.kueue_manager import CHART, KueueManager, helm_binary, render_kueue_release
from aifacility.embedded.controlplane.plane import ControlPlane, https_ok
from aifacility.embedded.nodeagent import provisioner
from aifacility.embedded.nodeagent.registration import is_virtual, node_address
from aifacility.embedded.virtualnode import rbac as virtual_kubelet_rbac
from aifacility.facility.model import Facility
from aifacility.facility.namespace import notebook_namespace
from aifacility.kueue.render import render as render_kueue_objects
from aifacility.launcher.supervisor import Component, LaunchError

# The chart's release namespace: the hub's identity lives there, the notebooks in the facility's own namespace,
# Kueue in its own release's (charts/kueue-values.yaml).
HUB_NAMESPACE = "aifacility-system"
HUB_SERVICE_ACCOUNT = "hub"


class Step(Component):
    """A one-shot step in the start sequence (no process of its own)."""

    def __init__(self, name: str, run: Callable[[], None], log: Path) -> None:
        super().__init__(name=name, argv=(), log=log)
        self._run = run
        self._done = False

    def start(self) -> None:
        self._run()
        self._done = True

    def wait_ready(self, timeout: float) -> None:
        return None

    def alive(self) -> bool:
        return self._done

    def stop(self, grace: float = 15.0) -> None:
        return None


def hub_rbac(namespace: str) -> list[dict[str, Any]]:
    """The hub's RBAC as the umbrella chart grants it (rendered by helm with notebooks in `namespace` and the
    release in HUB_NAMESPACE), so that a rule the chart lacks fails in the embedded facility first."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "aifacility"
        subprocess.run(["cp", "-r", str(CHART), str(chart)], check=True)
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        meta.pop("dependencies", None)
        (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
        values = Path(tmp) / "values.yaml"
        values.write_text(yaml.safe_dump({"facility": {"namespace": namespace}}))
        proc = subprocess.run([helm_binary(), "template", "aifacility", str(chart), "--namespace", HUB_NAMESPACE,
                               "--show-only", "templates/rbac.yaml", "-f", str(values)],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise LaunchError(f"helm template of the chart's RBAC failed: {proc.stderr.strip()[-2000:]}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


class EmbeddedCluster:
    """The control plane, Kueue and the facility's objects for one facility file and state directory."""

    def __init__(self, facility: Facility, state_dir: Path) -> None:
        self.facility = facility
        self.plane = ControlPlane(state_dir, facility.namespace, node_names=[n.name for n in facility.nodes])
        self.kueue: KueueManager | None = None

    @property
    def hub_kubeconfig(self) -> Path:
        return self.hub_kubeconfig_path(self.plane.state_dir)

    @staticmethod
    def hub_kubeconfig_path(state_dir: Path) -> Path:
        return Path(state_dir).resolve() / "controlplane" / "kubeconfigs" / "hub.kubeconfig"

    def _bootstrap(self) -> None:
        plane = self.plane
        plane.apply([notebook_namespace(self.facility.namespace),
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HUB_NAMESPACE}}])
        plane.apply(hub_rbac(self.facility.namespace))
        # Volumes: the facility's storage class (and a default one), served by the node agent's provisioner.
        classes = {self.facility.storage.storage_class, provisioner.STORAGE_CLASS}
        plane.apply([*provisioner.rbac(), *(provisioner.storage_class(c, default=c == provisioner.STORAGE_CLASS)
                                            for c in sorted(classes))])
        # The interLink virtual kubelets' ClusterRole (their identity is not a node's: see virtualnode/rbac.py).
        plane.apply(virtual_kubelet_rbac.rbac())
        plane.service_account_kubeconfig(HUB_NAMESPACE, HUB_SERVICE_ACCOUNT, "hub.kubeconfig")
        assert self.kueue is not None
        self.kueue.install(notebook_namespace(self.facility.namespace))

    def _queues(self) -> None:
        # After Kueue: its webhooks validate ClusterQueues and LocalQueues.
        self.plane.apply(render_kueue_objects(self.facility))

    def node_agent(self, facility_file: Path | None = None, *, interlink: Mapping[str, str] | None = None,
                   env: Mapping[str, str] | None = None, gpu_metrics_port: int | None = None) -> Component:
        """`interlink`: virtual node -> URL of its interLink plugin; `env`: e.g. the plugins' token file;
        `gpu_metrics_port`: where the figures of this machine's GPUs are served (nodeagent/gpumetrics.py)."""
        local = [(i, n) for i, n in enumerate(self.facility.nodes) if not is_virtual(n)]
        argv = [sys.executable, "-m", "aifacility.embedded.nodeagent", "--state-dir", str(self.plane.state_dir)]
        if facility_file is not None:
            argv += ["--facility", str(facility_file)]
        for node, url in (interlink or {}).items():
            argv += ["--interlink", f"{node}={url}"]
        if gpu_metrics_port:
            argv += ["--gpu-metrics-port", str(gpu_metrics_port)]
        # Ready once the last node serves its kubelet endpoint (nodes register in order).
        index = local[-1][0] if local else 0
        return Component(name="node agent", argv=argv, log=self.plane.logs / "node-agent.log", env=dict(env or {}),
                         ready=https_ok(f"https://{node_address(index)}:{self.plane.ports.kubelet}/healthz",
                                        self.plane.ca))

    def components(self, facility_file: Path | None = None, *, nodes: bool = True,
                   interlink: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
                   gpu_metrics_port: int | None = None) -> list[Component]:
        plane = self.plane
        plane.prepare()
        self.kueue = KueueManager(plane, render_kueue_release())
        log = plane.logs / "bootstrap.log"
        out = [plane.etcd(), plane.apiserver(), plane.controller_manager(), plane.scheduler(),
               Step("cluster bootstrap", self._bootstrap, log), self.kueue.component(),
               Step("the facility's queues", self._queues, log)]
        if nodes:
            out.append(self.node_agent(facility_file, interlink=interlink, env=env, gpu_metrics_port=gpu_metrics_port))
        return out
