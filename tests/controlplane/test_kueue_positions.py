"""Queue positions as the hub reads them: Kueue's visibility API through the aggregation layer, with the hub's
own service account, for Jobs that wait in a group's LocalQueue."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio import config

from aifacility.kueue.positions import find_owner, local_queue_positions, parse_summary
from support.controlplane import Cluster

NS = "aifacility"


def _job(name: str) -> dict[str, Any]:
    # More GPUs than the group has: never admitted, so the order of the queue stays put.
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "labels": {"kueue.x-k8s.io/queue-name": "physics"}},
            "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "busybox", "command": ["true"],
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"nvidia.com/gpu": "64"}}}]}}}}


async def test_the_hub_reads_each_pending_job_s_position_from_the_visibility_api(cluster: Cluster) -> None:
    api = await config.new_client_from_config(config_file=str(cluster.embedded.hub_kubeconfig))
    try:
        cluster.apply(_job("position-first"))
        for _ in range(150):  # the first one queued before the second exists
            if find_owner(await local_queue_positions(api, NS, "physics"), "Job", "position-first"):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.1)  # creation times have a resolution of a second: the second one is younger
        cluster.apply(_job("position-second"))
        async def positions() -> list[Any]:
            found = await local_queue_positions(api, NS, "physics")
            mine = [find_owner(found, "Job", n) for n in ("position-first", "position-second")]
            return [p for p in mine if p is not None]

        for _ in range(150):
            mine = await positions()
            if len(mine) == 2:
                break
            await asyncio.sleep(0.2)
        first, second = mine
        assert (first.local_queue, second.local_queue) == ("physics", "physics")
        assert first.position_in_local_queue < second.position_in_local_queue
        assert first.owner_kind == "Job"
    finally:
        await api.close()
        for name in ("position-first", "position-second"):
            cluster.kubectl("delete", "job", "-n", NS, name, "--wait=false")


def test_owner_references_without_the_controller_flag_still_name_the_job() -> None:
    summary = {"kind": "PendingWorkloadsSummary", "items": [{
        "metadata": {"name": "job-x-1", "namespace": NS,
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "x", "uid": "u"}]},
        "localQueueName": "physics", "positionInClusterQueue": 3, "positionInLocalQueue": 1, "priority": 0}]}
    (item,) = parse_summary(summary)
    assert (item.owner_kind, item.owner_name, item.position_in_local_queue) == ("Job", "x", 1)
    assert find_owner([item], "Job", "x") is item
