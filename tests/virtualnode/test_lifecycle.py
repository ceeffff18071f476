"""Init containers, followed logs, and a development cluster restarted under its running batch jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from vnode_helpers import VNODE, Kubectl, Plugin, squeue, until

from aifacility.devcluster import DevCluster, kinds
from aifacility.devcluster.store import Store
from aifacility.facility import load_facility
from aifacility_interlink.localslurm import LocalSlurm

pytestmark = pytest.mark.slurm
TOLERATION = {"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}


def pod(name: str, script: str, init: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": "Never", "tolerations": [TOLERATION],
                            "nodeSelector": {"kubernetes.io/hostname": VNODE},
                            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}
    if init is not None:
        spec["initContainers"] = [{"name": "prepare", "image": "busybox", "command": ["sh", "-c", init]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def status(cluster: DevCluster, name: str) -> dict[str, Any]:
    return dict(cluster.store.get(kinds.POD, "default", name).get("status") or {})


async def test_init_container_then_main_with_followed_logs(cluster: DevCluster, kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod(
        "staged", "for i in 1 2 3; do echo tick $i; sleep 1; done", init="echo preparing; sleep 3")))
    seen: list[tuple[Any, Any]] = []

    def record() -> bool:
        s = status(cluster, "staged")
        state = (s.get("phase"), s.get("reason"))
        if state[0] and (not seen or seen[-1] != state):
            seen.append(state)
        return s.get("phase") == "Running"

    await until(record, 90, every=0.1)
    assert ("Pending", "Init") in seen, seen
    # Followed from the start: every line arrives and kubectl returns when the container ends.
    followed = await kubectl("logs", "-f", "staged", "-c", "main")
    assert followed.splitlines() == ["tick 1", "tick 2", "tick 3"]
    await until(lambda: status(cluster, "staged").get("phase") == "Succeeded", 60)
    s = status(cluster, "staged")
    assert s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert "reason" not in s
    assert (await kubectl("logs", "staged", "-c", "prepare")).strip() == "preparing"
    init_cond = next(c for c in s["conditions"] if c["type"] == "Initialized")
    assert init_cond["status"] == "True"


async def test_restarted_cluster_follows_its_jobs_and_cancels_what_was_deleted(
        plugin: Plugin, slurm: LocalSlurm, tmp_path: Path) -> None:
    def make() -> DevCluster:
        dev = DevCluster(load_facility(), tmp_path / "state", interlink_urls={VNODE: plugin.url})
        dev.virtual_nodes.ping_interval = 0.5
        dev.virtual_nodes.status_interval = 0.5
        return dev

    async with make() as dev:
        dev.store.create(kinds.POD, pod("survivor", "echo begin; sleep 6; echo end"))
        dev.store.create(kinds.POD, pod("doomed", "sleep 600"))
        for name in ("survivor", "doomed"):
            await until(lambda: status(dev, name).get("phase") == "Running", 90)  # noqa: B023
        jids = {n: dev.store.get(kinds.POD, "default", n)["metadata"]["annotations"]["JobID"]
                for n in ("survivor", "doomed")}
    # The cluster is down; the jobs keep running on SLURM. A deletion is accepted meanwhile (the pod is marked
    # with a deletionTimestamp: what a delete that the node agent could not finish leaves behind).
    assert squeue(slurm, jids["doomed"]) == "RUNNING"
    store = Store(tmp_path / "state" / "store.sqlite")
    store.delete(kinds.POD, "default", "doomed")
    assert store.get(kinds.POD, "default", "doomed")["metadata"]["deletionTimestamp"]
    store.close()
    async with make() as dev:
        await until(lambda: status(dev, "survivor").get("phase") == "Succeeded", 90)
        survivor = dev.store.get(kinds.POD, "default", "survivor")
        assert survivor["metadata"]["annotations"]["JobID"] == jids["survivor"]
        submitted = [e for e in dev.store.list(kinds.EVENT, "default")[0]
                     if e["reason"] == "Submitted" and e["involvedObject"]["name"] == "survivor"]
        assert [e["count"] for e in submitted] == [1]  # followed after the restart, not submitted again
        await until(lambda: squeue(slurm, jids["doomed"]) == "", 30)
        assert not dev.store.list(kinds.POD, "default", field_selector="metadata.name=doomed")[0]
