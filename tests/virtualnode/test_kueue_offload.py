"""A batch/v1 Job queued through the real Kueue, admitted to the `hpc` offload flavor, runs on SLURM via the
virtual node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vnode_helpers import VNODE, Kubectl, OffloadCluster, until

from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.kueue.render import render as render_kueue_objects

pytestmark = pytest.mark.slurm
NS = "aifacility"


@pytest.fixture
def small_local_quota(cluster: OffloadCluster, tmp_path: Path) -> Iterator[OffloadCluster]:
    """The demo facility's queues with a 1-CPU local quota for physics that it may not exceed by borrowing from
    the cohort, so that a 3-CPU job can only go to HPC (how many CPUs the other groups lend does not matter; the
    facility's objects rendered again and applied; the demo's are restored afterwards)."""
    doc = yaml.safe_load(demo_facility_path().read_text())
    physics = doc["queues"]["groups"]["physics"]
    physics["cpu"] = "1"
    physics["borrowing_limit"] = {"cpu": "0"}
    path = tmp_path / "facility.yaml"
    path.write_text(yaml.safe_dump(doc))
    plane = cluster.embedded.plane
    plane.apply(render_kueue_objects(load_facility(path)))
    try:
        yield cluster
    finally:
        plane.kubectl("delete", "job", "-n", NS, "fit", "--ignore-not-found", "--wait=true", check=False)
        plane.apply(render_kueue_objects(cluster.embedded.facility))


def hpc_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "labels": {"kueue.x-k8s.io/queue-name": "physics"}},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                # Opting in to offload: the hpc flavor's taint is tolerated (the flavor itself adds no toleration).
                "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists",
                                 "effect": "NoSchedule"}],
                "containers": [{"name": "fit", "image": "docker.io/library/python:3.11", "command": [
                    "sh", "-c", "echo fitted on $SLURM_CPUS_PER_TASK cpus in $SLURM_JOB_PARTITION"],
                                "resources": {"requests": {"cpu": "3", "memory": "200Mi"},
                                              "limits": {"cpu": "3", "memory": "200Mi"}}}]}}}}


async def test_kueue_job_admitted_to_hpc_runs_on_slurm(small_local_quota: OffloadCluster) -> None:
    kubectl = Kubectl(small_local_quota.kubeconfig, namespace=NS)
    await kubectl.apply(hpc_job("fit"))

    async def workload() -> dict[str, Any] | None:
        items = json.loads(await kubectl("get", "workloads.kueue.x-k8s.io", "-o", "json"))["items"]
        admitted = [w for w in items if (w.get("status") or {}).get("admission")
                    and w["metadata"]["ownerReferences"][0]["name"] == "fit"]
        return admitted[0] if admitted else None

    wl = await until(workload, 60)
    [assignment] = wl["status"]["admission"]["podSetAssignments"]
    assert set(assignment["flavors"].values()) == {"hpc"}

    async def succeeded() -> bool:
        job = json.loads(await kubectl("get", "job", "fit", "-o", "json"))
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in (job.get("status") or {}).get("conditions") or [])

    await until(succeeded, 120)
    [pod] = json.loads(await kubectl("get", "pods", "-l", "job-name=fit", "-o", "json"))["items"]
    assert pod["spec"]["nodeName"] == VNODE
    assert pod["metadata"]["annotations"]["JobID"].isdigit()
    assert pod["status"]["phase"] == "Succeeded"
    out = await kubectl("logs", pod["metadata"]["name"])
    assert out.strip() == "fitted on 3 cpus in debug"
