"""The real Kueue's cohort semantics on the embedded control plane: borrowing idle quota, and a higher-priority
workload of the lending queue preempting a borrowed one. Shown through Workloads and their conditions, as
`kubectl get workloads` shows them to an admin."""

from __future__ import annotations

import time
from typing import Any

from support.controlplane import Cluster

NS = "aifacility"
FLAVOR = "cohort-test-cpu"


def _queues() -> list[dict[str, Any]]:
    def cq(name: str) -> dict[str, Any]:
        return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name},
                "spec": {"cohortName": "cohort-test",
                         "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                         "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority"},
                         "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
                             {"name": FLAVOR, "resources": [{"name": "cpu", "nominalQuota": "2"}]}]}]}}

    def lq(name: str) -> dict[str, Any]:
        return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                "metadata": {"name": name, "namespace": NS}, "spec": {"clusterQueue": name}}

    return [{"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
             "metadata": {"name": "cohort-test-high"}, "value": 1000},
            cq("team-a"), cq("team-b"), lq("team-a"), lq("team-b")]


def _job(name: str, queue: str, cpu: str, priority: str | None = None) -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": queue}
    if priority:
        labels["kueue.x-k8s.io/priority-class"] = priority
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "600"],
                 "resources": {"requests": {"cpu": cpu}}}]}}}}


def _workload(cluster: Cluster, job: str) -> dict[str, Any]:
    uid = cluster.get("job", "-n", NS, job)["metadata"]["uid"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = cluster.get("workloads", "-n", NS, "-l", f"kueue.x-k8s.io/job-uid={uid}")["items"]
        if items:
            return dict(items[0])
        time.sleep(0.3)
    raise AssertionError(f"no Workload for job {job}")


def _wait_condition(cluster: Cluster, job: str, type_: str, status: str = "True",
                    timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        wl = _workload(cluster, job)
        conds = {c["type"]: c for c in (wl.get("status") or {}).get("conditions") or []}
        if conds.get(type_, {}).get("status") == status:
            return wl
        if time.monotonic() > deadline:
            raise AssertionError(f"{job}: condition {type_} never became {status}: {conds}")
        time.sleep(0.3)


def test_a_queue_borrows_idle_quota_and_a_higher_priority_workload_reclaims_it(cluster: Cluster) -> None:
    cluster.apply(*_queues())
    cluster.kubectl("wait", "--for=condition=Active", "clusterqueue/team-a", "clusterqueue/team-b",
                    "--timeout=30s")
    # team-b asks for 3 CPUs with 2 of its own: admitted by borrowing one of team-a's idle CPUs.
    cluster.apply(_job("borrower", "team-b", "3"))
    wl = _wait_condition(cluster, "borrower", "Admitted")
    assert wl["status"]["admission"]["clusterQueue"] == "team-b"
    # The ClusterQueue's status shows the borrowed CPU (written a moment after the admission).
    cluster.kubectl("wait", "--for=jsonpath={.status.flavorsUsage[0].resources[0].borrowed}=1",
                    "clusterqueue/team-b", "--timeout=30s")

    # team-a now needs its 2 CPUs, at a higher priority: Kueue evicts the borrower to reclaim them.
    cluster.apply(_job("owner", "team-a", "2", priority="cohort-test-high"))
    evicted = _wait_condition(cluster, "borrower", "Evicted")
    reason = {c["type"]: c for c in evicted["status"]["conditions"]}["Evicted"]["reason"]
    assert reason == "Preempted"
    owner = _wait_condition(cluster, "owner", "Admitted")
    assert owner["spec"]["priority"] == 1000
    assert cluster.get("job", "-n", NS, "borrower")["spec"]["suspend"] is True

    table = cluster.kubectl("get", "workloads", "-n", NS).stdout
    assert "team-a" in table and "team-b" in table
    for job in ("borrower", "owner"):
        cluster.kubectl("delete", "job", "-n", NS, job, "--wait=false")
