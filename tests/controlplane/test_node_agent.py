"""The node agent as the kubelet of the real API: nodes registered with their devices, pods scheduled by the real
kube-scheduler and run as sandboxed processes, claims provisioned, logs served through the API server."""

from __future__ import annotations

import time
from typing import Any

from support.controlplane import Cluster

NS = "aifacility"


def _wait_phase(cluster: Cluster, name: str, phases: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = cluster.get("pod", "-n", NS, name)
        if (pod.get("status") or {}).get("phase") in phases:
            return pod
        if time.monotonic() > deadline:
            events = cluster.kubectl("get", "events", "-n", NS, "--field-selector",
                                     f"involvedObject.name={name}").stdout
            raise AssertionError(f"pod {name} not in {phases}: {pod.get('status')}\n{events}")
        time.sleep(0.3)


def test_nodes_register_ready_with_their_accelerators(cluster: Cluster) -> None:
    cluster.kubectl("wait", "--for=condition=Ready", "node/gpu-a100-01", "--timeout=60s")
    node = cluster.get("node", "gpu-a100-01")
    allocatable = node["status"]["allocatable"]
    assert any(k.startswith("nvidia.com/mig-") for k in allocatable), allocatable
    lease = cluster.get("lease", "-n", "kube-node-lease", "gpu-a100-01")
    assert lease["spec"]["holderIdentity"] == "gpu-a100-01"


def test_a_pod_with_a_claim_runs_and_its_logs_come_through_the_api(cluster: Cluster) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "agent-claim", "namespace": NS},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent-hello", "namespace": NS},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 100},
                    "containers": [{"name": "main", "image": "python:3.12",
                                    "command": ["sh", "-c", "echo hello from $(hostname); echo data > /data/f; "
                                                "cat /data/f"],
                                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                                    "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "agent-claim"}}]}}
    cluster.apply(claim, pod)
    cluster.kubectl("wait", "-n", NS, "--for=jsonpath={.status.phase}=Bound", "pvc/agent-claim", "--timeout=60s")
    done = _wait_phase(cluster, "agent-hello", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["spec"]["nodeName"]
    logs = cluster.kubectl("logs", "-n", NS, "agent-hello").stdout
    assert "hello from agent-hello" in logs and "data" in logs
    cluster.kubectl("delete", "pod", "-n", NS, "agent-hello", "--timeout=60s")
    assert cluster.kubectl("get", "pod", "-n", NS, "agent-hello", check=False).returncode != 0


def test_a_job_runs_to_completion_through_the_controller_manager(cluster: Cluster) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "agent-job", "namespace": NS},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never", "automountServiceAccountToken": False,
               "containers": [{"name": "main", "image": "python:3.12", "command": ["sh", "-c", "echo job done"],
                               "resources": {"requests": {"cpu": "100m"}}}]}}}}
    cluster.apply(job)
    cluster.kubectl("wait", "-n", NS, "--for=condition=Complete", "job/agent-job", "--timeout=90s")
    assert "job done" in cluster.kubectl("logs", "-n", NS, "job/agent-job").stdout
