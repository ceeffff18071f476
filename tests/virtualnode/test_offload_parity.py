"""The same pod manifests, run on a local node (the node agent) and on the virtual node (interLink plugin, real
SLURM), end in the same phase with the same exit codes and logs. Only the placement differs."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from vnode_helpers import TOLERATION, VNODE, Kubectl, OffloadCluster, until

pytestmark = pytest.mark.slurm

SCRATCH = [{"name": "scratch", "emptyDir": {}}]


def _ctn(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "docker.io/library/busybox:1.36", "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}], **extra}


MANIFESTS: dict[str, dict[str, Any]] = {
    "init-env-volume": {
        "initContainers": [_ctn("prepare", "echo from-init > /scratch/data")],
        "containers": [_ctn("main", "cat /scratch/data; echo mode=$MODE",
                            env=[{"name": "MODE", "value": "fast"}])],
    },
    "exit-code": {"containers": [_ctn("main", "echo before failing; exit 3")]},
    "init-fails": {
        "initContainers": [_ctn("prepare", "echo init broke; exit 2")],
        "containers": [_ctn("main", "echo never")],
    },
    "hook-and-probe": {
        "containers": [_ctn(
            "main", "until [ -e /scratch/marker ]; do sleep 0.1; done; cat /scratch/marker; sleep 3; echo done",
            lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "echo prepared > /scratch/marker"]}}},
            readinessProbe={"exec": {"command": ["test", "-e", "/scratch/marker"]}, "periodSeconds": 1})],
    },
}

# What each case must give on both nodes: the phase, and the exit code of every container that ran.
EXPECTED = {
    "init-env-volume": ("Succeeded", {"prepare": 0}, {"main": 0}, {"prepare": "", "main": "from-init\nmode=fast\n"}),
    "exit-code": ("Failed", {}, {"main": 3}, {"main": "before failing\n"}),
    "init-fails": ("Failed", {"prepare": 2}, {"main": None}, {"prepare": "init broke\n"}),
    "hook-and-probe": ("Succeeded", {}, {"main": 0}, {"main": "prepared\ndone\n"}),
}


async def _local_node(kubectl: Kubectl) -> str:
    """A local node that takes any pod: not virtual, no taints."""
    nodes = (await kubectl.get_list("nodes"))["items"]
    names = [n["metadata"]["name"] for n in nodes
             if n["metadata"]["name"] != VNODE and not n["spec"].get("taints")]
    assert names, [n["metadata"]["name"] for n in nodes]
    return sorted(names)[0]


def _placed(name: str, spec: dict[str, Any], node: str) -> dict[str, Any]:
    body = copy.deepcopy(spec)
    body.update(restartPolicy="Never", volumes=SCRATCH, tolerations=[TOLERATION],
                nodeSelector={"kubernetes.io/hostname": node})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": body}


async def _outcome(kubectl: Kubectl, name: str) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        pod = await kubectl.get("pod", name)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = await until(ended, 150)
    status = pod["status"]

    def codes(key: str) -> dict[str, int | None]:
        return {cs["name"]: (cs["state"].get("terminated") or {}).get("exitCode")
                for cs in status.get(key) or []}

    ran = [cs["name"] for cs in (status.get("initContainerStatuses") or []) + status["containerStatuses"]
           if cs["state"].get("terminated", {}).get("startedAt")]
    logs = {c: await kubectl("logs", name, "-c", c) for c in ran}
    return {"phase": status["phase"], "init": codes("initContainerStatuses"),
            "containers": codes("containerStatuses"), "logs": logs}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
async def test_same_manifest_same_outcome_on_local_and_virtual_node(case: str, cluster: OffloadCluster,
                                                                  kubectl: Kubectl) -> None:
    local = await _local_node(kubectl)
    await until(lambda: _virtual_ready(kubectl))
    names = {"local": f"parity-{case}-local", "virtual": f"parity-{case}-virtual"}
    await kubectl.apply(_placed(names["local"], MANIFESTS[case], local),
                        _placed(names["virtual"], MANIFESTS[case], VNODE))
    on_local, on_virtual = await asyncio.gather(_outcome(kubectl, names["local"]),
                                                _outcome(kubectl, names["virtual"]))
    phase, init, containers, logs = EXPECTED[case]
    assert on_local == {"phase": phase, "init": init, "containers": containers, "logs": logs}
    assert on_virtual == on_local
    await kubectl("delete", "pod", *names.values(), "--wait=true", "--timeout=60s")


async def _virtual_ready(kubectl: Kubectl) -> bool:
    node = await kubectl.get_list("nodes")
    vnode = next((n for n in node["items"] if n["metadata"]["name"] == VNODE), None)
    return vnode is not None and any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in vnode["status"].get("conditions") or [])
