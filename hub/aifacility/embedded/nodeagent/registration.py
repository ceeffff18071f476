"""Node objects from the facility file, as a kubelet (or interLink's virtual kubelet) registers them.

Registered again at every start because the facility file is the source of truth and may have changed.
"""

from __future__ import annotations

import platform
import shutil
import uuid
from pathlib import Path
from typing import Any

from aifacility.embedded.controlplane.versions import versions
from aifacility.embedded.nodeagent.events import now
from aifacility.facility.model import Facility, Node
from aifacility.facility.queues import SITE_LABEL

# Node features the API server acts on (status.declaredFeatures, sorted): ExtendWebSocketsToKubelet has it
# proxy `kubectl exec`'s WebSocket to our kubelet endpoint as it is.
DECLARED_FEATURES = ("ExtendWebSocketsToKubelet",)
INTERLINK_TAINT = {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}
# interLink's virtual kubelet labels accelerators by vendor kind.
_VIRTUAL_ACCEL_LABEL = {"gpu": "nvidia-gpu-type", "mig": "nvidia-gpu-type", "fpga": "xilinx-fpga-type"}


def node_address(index: int) -> str:
    """Each node's InternalIP: 127.1.0.N (the pods get their own addresses elsewhere in 127/8)."""
    n = index + 1
    return f"127.1.{n // 256}.{n % 256}"


def is_virtual(node: Node) -> bool:
    return node.interlink is not None


def _ephemeral_storage(state_dir: Path | None) -> str:
    try:
        total = shutil.disk_usage(state_dir or "/").total
    except OSError:
        total = 100 * 2**30
    return f"{total // 2**30}Gi"


def capacity(facility: Facility, node: Node, state_dir: Path | None) -> dict[str, str]:
    cap = {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods),
           "ephemeral-storage": _ephemeral_storage(state_dir), "hugepages-2Mi": "0"}
    for accel_name, count in node.accelerators.items():
        cap[facility.accelerator(accel_name).resource] = str(count)
    return cap


def labels(facility: Facility, node: Node) -> dict[str, str]:
    out = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"{node.cpu}cpu-{node.memory}",
    }
    if is_virtual(node):
        out.update({"kubernetes.io/os": "virtual-kubelet", "beta.kubernetes.io/os": "virtual-kubelet",
                    "virtual-node.interlink/type": "virtual-kubelet",
                    "node.kubernetes.io/instance-type": "virtual-kubelet"})
        for accel_name in node.accelerators:
            accel = facility.accelerator(accel_name)
            out[_VIRTUAL_ACCEL_LABEL[accel.kind]] = accel.name
    out[SITE_LABEL] = facility.queues.site(node.name, is_virtual(node))
    out.update(node.labels)
    return out


def taints(node: Node) -> list[dict[str, str]]:
    out = [{"key": t.key, "value": t.value, "effect": t.effect} if t.value else {"key": t.key, "effect": t.effect}
           for t in node.taints]
    if is_virtual(node) and not any(t["key"] == INTERLINK_TAINT["key"] for t in out):
        out.append(dict(INTERLINK_TAINT))
    return out


def _conditions(stamp: str) -> list[dict[str, str]]:
    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}

    return [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]


def node_object(facility: Facility, node: Node, index: int, state_dir: Path | None,
                kubelet_port: int = 10250) -> dict[str, Any]:
    cap = capacity(facility, node, state_dir)
    stamp = now()
    virtual = is_virtual(node)
    spec: dict[str, Any] = {}
    node_taints = taints(node)
    if node_taints:
        spec["taints"] = node_taints
    status: dict[str, Any] = {}
    if not virtual:
        # Our kubelet endpoint serves exec over WebSockets: the API server proxies kubectl's WebSocket to it
        # (instead of translating to SPDY, which it does not speak) for nodes that declare this feature.
        status["declaredFeatures"] = list(DECLARED_FEATURES)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels(facility, node),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "aifacility.io/node-kind": "interlink" if virtual else "local"},
        },
        "spec": spec,
        "status": {
            "capacity": cap,
            "allocatable": dict(cap),
            "conditions": _conditions(stamp),
            "addresses": [{"type": "InternalIP", "address": node_address(index)},
                          {"type": "Hostname", "address": node.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, node.name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, node.name)),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": platform.release(),
                "osImage": "interLink virtual node" if virtual else "aifacility development node",
                "containerRuntimeVersion": ("interlink://" + node.interlink.backend) if node.interlink
                else "bwrap://0.8",
                "kubeletVersion": versions().kubernetes,
                "kubeProxyVersion": versions().kubernetes,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            **status,
        },
    }


def local_node_names(facility: Facility) -> list[str]:
    return [n.name for n in facility.nodes if not is_virtual(n)]


def node_ip(node: dict[str, Any]) -> str:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return str(a.get("address"))
    return "127.0.0.1"
