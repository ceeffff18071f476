"""Virtual nodes: the local agent leaves their pods alone; a provider registered by a plugin serves them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifacility.devcluster import DevCluster, kinds
from aifacility.devcluster.agent.provider import Notify, Pod
from aifacility.facility.model import Facility

OFFLOAD_TOLERATION = {"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}


class RecordingProvider:
    """A PodLifecycleHandler that completes every pod at once (what a batch system would report)."""

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self.created: list[str] = []
        self.deleted: list[str] = []

    async def create_pod(self, pod: Pod) -> None:
        self.created.append(pod["metadata"]["name"])
        self.notify(pod, {"phase": "Succeeded", "containerStatuses": [
            {"name": "main", "ready": False, "restartCount": 0, "image": "x",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]})

    async def update_pod(self, pod: Pod) -> None:
        return None

    async def delete_pod(self, pod: Pod) -> None:
        self.deleted.append(pod["metadata"]["name"])

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return None

    async def get_pod_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def get_pods(self) -> list[Pod]:
        return []

    async def shutdown(self) -> None:
        return None


def offload_pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"restartPolicy": "Never", "tolerations": [OFFLOAD_TOLERATION],
                     "nodeSelector": {"kubernetes.io/hostname": "vk-hpc-leonardo"},
                     "containers": [{"name": "main", "image": "x", "command": ["true"]}]}}


async def until(check: Callable[[], Any], seconds: float = 10) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            if value := check():
                return value
            await asyncio.sleep(0.02)


async def test_virtual_node_pods_go_to_the_registered_provider(facility: Facility, tmp_path: Path) -> None:
    providers: list[RecordingProvider] = []

    def plugin(cluster: DevCluster) -> None:
        provider = RecordingProvider(cluster.agent.notify)
        providers.append(provider)
        cluster.agent.register_provider("vk-hpc-leonardo", provider)

    async with DevCluster(facility, tmp_path / "state", plugins=[plugin]) as cluster:
        cluster.store.create(kinds.POD, offload_pod("offloaded"))
        pod = await until(lambda: (p := cluster.store.get(kinds.POD, "default", "offloaded"))["status"].get(
            "phase") == "Succeeded" and p)
        assert pod["spec"]["nodeName"] == "vk-hpc-leonardo"
        assert providers[0].created == ["offloaded"]
        cluster.store.delete(kinds.POD, "default", "offloaded")
        await until(lambda: not cluster.store.list(kinds.POD, "default")[0])
        assert providers[0].deleted == ["offloaded"]


async def test_without_a_provider_virtual_node_pods_stay_pending(facility: Facility, tmp_path: Path) -> None:
    async with DevCluster(facility, tmp_path / "state") as cluster:
        cluster.store.create(kinds.POD, offload_pod("waiting"))
        await until(lambda: cluster.store.get(kinds.POD, "default", "waiting")["spec"].get("nodeName"))
        await asyncio.sleep(0.3)
        pod = cluster.store.get(kinds.POD, "default", "waiting")
        assert pod["status"]["phase"] == "Pending" and "podIP" not in pod["status"]
