"""Volumes of a notebook pod: a private home per user, group directories for member groups only, read-only
datasets, a RAM-backed /dev/shm; and the ReadWriteMany claims behind them."""

from __future__ import annotations

from typing import Any

from aifacility.facility import Facility
from aifacility.spawner import storage


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def test_alice_gets_her_home_and_both_group_dirs_bob_only_physics(facility: Facility) -> None:
    vols, mounts = storage.pod_volumes(facility, "home-alice", ["physics", "ml"])
    v, m = by_name(vols), by_name(mounts)
    assert v["home"]["persistentVolumeClaim"]["claimName"] == "home-alice"
    assert m["home"]["mountPath"] == "/home/jovyan"
    assert v["group-ml"]["persistentVolumeClaim"]["claimName"] == "group-ml"
    assert m["group-physics"]["mountPath"] == "/shared/groups/physics"

    bob_vols, bob_mounts = storage.pod_volumes(facility, "home-bob", ["physics"])
    claims = {x["persistentVolumeClaim"]["claimName"] for x in bob_vols if "persistentVolumeClaim" in x}
    assert claims == {"home-bob", "group-physics", "dataset-opendata-cms", "dataset-software"}
    assert not any(x["mountPath"].startswith("/shared/groups/ml") for x in bob_mounts)


def test_groups_the_facility_does_not_know_get_no_directory(facility: Facility) -> None:
    vols, _ = storage.pod_volumes(facility, "home-eve", ["physics", "some-iam-only-group"])
    assert "group-some-iam-only-group" not in by_name(vols)


def test_datasets_are_read_only_and_shm_is_memory_backed(facility: Facility) -> None:
    vols, mounts = storage.pod_volumes(facility, "home-alice", ["ml"])
    v, m = by_name(vols), by_name(mounts)
    assert m["dataset-opendata-cms"] == {"name": "dataset-opendata-cms", "mountPath": "/datasets/opendata-cms",
                                         "readOnly": True}
    assert v["dataset-software"]["persistentVolumeClaim"]["readOnly"] is True
    assert v["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert m["dshm"]["mountPath"] == "/dev/shm"


def test_group_claim_is_readwritemany_on_the_facility_class(facility: Facility) -> None:
    pvc = storage.pvc_manifest(storage.group_claim("physics"), facility.storage, "100Gi", "group", "physics")
    assert pvc["metadata"]["name"] == "group-physics"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == "nfs-rwx"
    assert pvc["metadata"]["labels"][storage.STORAGE_LABEL] == "group"
    # IAM group names such as "cms/higgs" still give valid, distinct claim names.
    assert storage.group_claim("cms/higgs") != storage.group_claim("cms-higgs")


async def test_the_spawner_home_claim_is_per_user_and_readwritemany(make_spawner: Any, make_user: Any) -> None:
    alice = make_spawner(make_user("alice", "physics", "ml"))
    bob = make_spawner(make_user("bob", "physics"))
    assert (alice.pvc_name, bob.pvc_name) == ("home-alice", "home-bob")
    pvc = alice.get_pvc_manifest()
    assert pvc.spec.access_modes == ["ReadWriteMany"]
    assert pvc.spec.storage_class_name == "nfs-rwx"
    assert pvc.spec.resources.requests["storage"] == "20Gi"
