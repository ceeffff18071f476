"""Kueue in the whole development cluster: the facility's queues applied at start, a GPU pod queued through a
LocalQueue, admitted to its flavor, scheduled by the scheduler, run by the node agent; read with real kubectl."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aifacility.devcluster import DevCluster
from aifacility.devcluster.kinds import CLUSTERQUEUE, JOB, LOCALQUEUE, POD, RESOURCEFLAVOR, WORKLOAD
from aifacility.devcluster.kueue.workloads import condition
from aifacility.facility import load_facility
from aifacility.kueue import render

NS = "aifacility"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[DevCluster]:
    c = DevCluster(load_facility(), tmp_path / "cluster")
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def gpu_pod(name: str, gpus: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": {"kueue.x-k8s.io/queue-name": "physics"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "busybox", "command": ["sleep", "60"],
                "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": str(gpus)},
                              "limits": {"nvidia.com/gpu": str(gpus)}}}]}}


async def wait_for(predicate: Any, what: str, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds}s")


async def kubectl(cluster: DevCluster, *args: str) -> str:
    """Real kubectl, run without blocking the event loop the API server answers on."""
    proc = await asyncio.create_subprocess_exec("kubectl", "--kubeconfig", str(cluster.kubeconfig_path), *args,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_gpu_pod_queued_admitted_scheduled(cluster: DevCluster) -> None:
    store = cluster.store
    assert {o["metadata"]["name"] for o in store.list(CLUSTERQUEUE)[0]} == {"physics", "ml"}
    assert len(store.list(RESOURCEFLAVOR)[0]) == 10
    assert {o["metadata"]["name"] for o in store.list(LOCALQUEUE, NS)[0]} == {"physics", "ml"}

    # physics owns 4 T4s and ml 2; the cohort lends ml's, but the cluster has only the 4 T4s of gpu-t4-01.
    store.create(POD, gpu_pod("all-t4", 4))
    await cluster.kueue.settle()

    def running() -> bool:
        return (store.get(POD, NS, "all-t4").get("status") or {}).get("phase") == "Running"

    await wait_for(running, "the admitted pod runs")
    p = store.get(POD, NS, "all-t4")
    assert p["spec"]["nodeName"] == "gpu-t4-01"
    assert p["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p["spec"]["tolerations"]

    # Over nominal + everything the cohort can lend: it waits in the queue, gated, with its position.
    store.create(POD, gpu_pod("too-many", 3))
    await cluster.kueue.settle()
    assert store.get(POD, NS, "too-many")["spec"]["schedulingGates"] == [{"name": "kueue.x-k8s.io/admission"}]
    raw = await kubectl(cluster, "get", "--raw",
                  f"/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{NS}/localqueues/physics/pendingworkloads")
    [item] = json.loads(raw)["items"]
    assert item["metadata"]["ownerReferences"][0]["name"] == "too-many"
    assert item["positionInLocalQueue"] == 0

    table = await kubectl(cluster, "get", "clusterqueue", "physics", "-o", "json")
    status = json.loads(table)["status"]
    assert (status["pendingWorkloads"], status["admittedWorkloads"]) == (1, 1)
    gpu_usage = next(f for f in status["flavorsUsage"] if f["name"] == "t4")
    assert gpu_usage["resources"] == [{"name": "nvidia.com/gpu", "total": "4", "borrowed": "0"}]
    wls = json.loads(await kubectl(cluster, "get", "workloads", "-n", NS, "-o", "json"))["items"]
    assert len(wls) == 2


async def test_rendered_objects_apply_with_kubectl(cluster: DevCluster, tmp_path: Path) -> None:
    path = tmp_path / "kueue.yaml"
    path.write_text(yaml.safe_dump_all(render(cluster.facility)))
    out = await kubectl(cluster, "apply", "-f", str(path))
    assert "clusterqueue.kueue.x-k8s.io/physics" in out and "localqueue.kueue.x-k8s.io/ml" in out
    queues = await kubectl(cluster, "get", "queues", "-n", NS, "-o", "name")
    assert sorted(queues.split()) == ["localqueue.kueue.x-k8s.io/ml", "localqueue.kueue.x-k8s.io/physics"]


async def test_queued_job_runs_and_releases_its_quota(cluster: DevCluster) -> None:
    store = cluster.store
    store.create(JOB, {
        "metadata": {"name": "analysis", "namespace": NS, "labels": {"kueue.x-k8s.io/queue-name": "ml"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox", "command": ["sh", "-c", "echo done"],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}}})

    def finished() -> bool:
        wls = store.list(WORKLOAD, NS)[0]
        return bool(wls) and condition(wls[0], "Finished") is not None

    await wait_for(finished, "the job's workload finishes", seconds=30)
    job = store.get(JOB, NS, "analysis")
    assert job["spec"]["suspend"] is False
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    [wl] = store.list(WORKLOAD, NS)[0]
    assert wl["status"]["admission"]["podSetAssignments"][0]["flavors"] == {"cpu": "default", "memory": "default"}
    assert condition(wl, "Finished")["reason"] == "Succeeded"
    cpu = store.get(CLUSTERQUEUE, None, "ml")["status"]["flavorsUsage"][0]["resources"][0]
    assert cpu == {"name": "cpu", "total": "0", "borrowed": "0"}
