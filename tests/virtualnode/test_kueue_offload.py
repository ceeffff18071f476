"""A batch/v1 Job queued through Kueue, admitted to the `hpc` offload flavor, runs on SLURM via the virtual node."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vnode_helpers import VNODE, Kubectl, Plugin, until

from aifacility.devcluster import DevCluster
from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path

pytestmark = pytest.mark.slurm
NS = "aifacility"


@pytest.fixture
async def small_quota_cluster(plugin: Plugin, tmp_path: Path) -> AsyncIterator[DevCluster]:
    """The demo facility with a 1-CPU local quota per group, so that a 3-CPU job can only go to HPC."""
    doc = yaml.safe_load(demo_facility_path().read_text())
    for group in doc["queues"]["groups"].values():
        group["cpu"] = "1"
        group.pop("borrowing_limit", None)
    path = tmp_path / "facility.yaml"
    path.write_text(yaml.safe_dump(doc))
    dev = DevCluster(load_facility(path), tmp_path / "state", interlink_urls={VNODE: plugin.url})
    dev.virtual_nodes.ping_interval = 0.5
    dev.virtual_nodes.status_interval = 0.5
    async with dev:
        yield dev


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


async def test_kueue_job_admitted_to_hpc_runs_on_slurm(small_quota_cluster: DevCluster) -> None:
    kubectl = Kubectl(small_quota_cluster.kubeconfig_path)
    await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(hpc_job("fit")))

    async def workload() -> dict[str, Any] | None:
        items = json.loads(await kubectl("get", "workloads.kueue.x-k8s.io", "-n", NS, "-o", "json"))["items"]
        admitted = [w for w in items if (w.get("status") or {}).get("admission")]
        return admitted[0] if admitted else None

    wl = await until(workload, 60)
    [assignment] = wl["status"]["admission"]["podSetAssignments"]
    assert set(assignment["flavors"].values()) == {"hpc"}

    async def succeeded() -> bool:
        job = json.loads(await kubectl("get", "job", "fit", "-n", NS, "-o", "json"))
        return any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"].get("conditions") or [])

    await until(succeeded, 120)
    pods = json.loads(await kubectl("get", "pods", "-n", NS, "-l", "job-name=fit", "-o", "json"))["items"]
    [pod] = pods
    assert pod["spec"]["nodeName"] == VNODE
    assert pod["metadata"]["annotations"]["JobID"].isdigit()
    assert pod["status"]["phase"] == "Succeeded"
    out = await kubectl("logs", "-n", NS, pod["metadata"]["name"])
    assert out.strip() == "fitted on 3 cpus in debug"
