"""Garbage collection by owner references (background, foreground, orphan) and PVC binding, on a DevCluster
running in the test's own event loop (store calls only, no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aifacility.devcluster import DevCluster, kinds
from aifacility.devcluster.store import NotFound
from aifacility.facility.model import Facility


@pytest.fixture
async def cluster(facility: Facility, tmp_path: Path) -> AsyncIterator[DevCluster]:
    c = DevCluster(facility, tmp_path / "state")
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def until(check: Callable[[], Any], seconds: float = 10) -> Any:
    async with asyncio.timeout(seconds):
        while True:  # until the check holds or the timeout cancels
            if value := check():
                return value
            await asyncio.sleep(0.02)


def exists(c: DevCluster, kind: Any, name: str) -> bool:
    try:
        c.store.get(kind, "default", name)
    except NotFound:
        return False
    return True


def family(c: DevCluster, owner: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": owner, "namespace": "default"}
    if finalizers:
        meta["finalizers"] = finalizers
    parent = c.store.create(kinds.CONFIGMAP, {"metadata": meta})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": parent["metadata"]["uid"],
           "blockOwnerDeletion": True}
    for i in range(2):
        c.store.create(kinds.CONFIGMAP, {"metadata": {"name": f"{owner}-child-{i}", "namespace": "default",
                                                      "ownerReferences": [ref]}})
    return parent


async def test_background_cascade(cluster: DevCluster) -> None:
    family(cluster, "bg")
    cluster.store.delete(kinds.CONFIGMAP, "default", "bg")
    await until(lambda: not exists(cluster, kinds.CONFIGMAP, "bg-child-0")
                and not exists(cluster, kinds.CONFIGMAP, "bg-child-1"))


async def test_orphan_keeps_dependents_without_the_reference(cluster: DevCluster) -> None:
    family(cluster, "or")
    cluster.store.delete(kinds.CONFIGMAP, "default", "or", propagation_policy="Orphan")
    await until(lambda: not exists(cluster, kinds.CONFIGMAP, "or"))
    child = cluster.store.get(kinds.CONFIGMAP, "default", "or-child-0")
    assert not child["metadata"].get("ownerReferences")


async def test_foreground_deletes_dependents_first(cluster: DevCluster) -> None:
    family(cluster, "fg")
    watcher = cluster.store.watch(kinds.CONFIGMAP, "default")
    cluster.store.delete(kinds.CONFIGMAP, "default", "fg", propagation_policy="Foreground")
    marked = cluster.store.get(kinds.CONFIGMAP, "default", "fg")
    assert "foregroundDeletion" in marked["metadata"]["finalizers"]
    await until(lambda: not exists(cluster, kinds.CONFIGMAP, "fg"))
    assert not exists(cluster, kinds.CONFIGMAP, "fg-child-0")
    assert not exists(cluster, kinds.CONFIGMAP, "fg-child-1")
    deleted = []
    async with asyncio.timeout(5):
        async for event in watcher:
            if event.type == "DELETED":
                deleted.append(event.object["metadata"]["name"])
            if "fg" in deleted:
                break
    watcher.close()
    assert deleted[-1] == "fg" and set(deleted[:-1]) == {"fg-child-0", "fg-child-1"}


async def test_a_new_owner_with_the_same_name_does_not_adopt(cluster: DevCluster) -> None:
    family(cluster, "re")
    cluster.store.delete(kinds.CONFIGMAP, "default", "re")
    cluster.store.create(kinds.CONFIGMAP, {"metadata": {"name": "re", "namespace": "default"}})
    await until(lambda: not exists(cluster, kinds.CONFIGMAP, "re-child-0"))
    assert exists(cluster, kinds.CONFIGMAP, "re")


async def test_claims_bind_at_once_and_release_their_data(cluster: DevCluster) -> None:
    cluster.store.create(kinds.PVC, {"metadata": {"name": "data", "namespace": "default"},
                                     "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs-rwx",
                                              "resources": {"requests": {"storage": "5Gi"}}}})
    claim = await until(lambda: (c := cluster.store.get(kinds.PVC, "default", "data"))["status"].get("phase")
                        == "Bound" and c)
    assert claim["status"]["capacity"] == {"storage": "5Gi"}
    assert claim["status"]["accessModes"] == ["ReadWriteMany"]
    pv = cluster.store.get(kinds.PV, None, claim["spec"]["volumeName"])
    assert pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert pv["spec"]["storageClassName"] == "nfs-rwx" and pv["status"]["phase"] == "Bound"
    directory = cluster.state_dir / "volumes" / "default" / "data"
    assert directory.is_dir()
    cluster.store.delete(kinds.PVC, "default", "data")
    await until(lambda: not directory.exists())
    with pytest.raises(NotFound):
        cluster.store.get(kinds.PV, None, pv["metadata"]["name"])
