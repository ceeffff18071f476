"""The volumes of a notebook pod: private home, shared group directories, read-only datasets, /dev/shm.

Every shared area is a PersistentVolumeClaim on the facility's ReadWriteMany storage class (NFS or CephFS in
production; a directory under the state directory in the embedded cluster). A pod only ever mounts the
claims of its own user and of the groups that user is in, so one user cannot reach another's home or a group
they are not a member of: isolation comes from what is mounted, not from file permissions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner.slugs import safe_slug

from aifacility.facility.model import Facility, Storage

# Labels on the claims we create, so operators can list them (`kubectl get pvc -l aifacility.io/storage`).
STORAGE_LABEL = "aifacility.io/storage"


def group_claim(group: str) -> str:
    return f"group-{safe_slug(group)}"


def dataset_claim(dataset: str) -> str:
    return f"dataset-{dataset}"


def member_groups(facility: Facility, groups: Iterable[str]) -> list[str]:
    """Groups that get a shared directory: the user's groups that the facility knows (quotas or profiles)."""
    known = set(facility.quotas.groups) | {g for p in facility.profiles for g in p.groups}
    return sorted(set(groups) & known)


def pod_volumes(facility: Facility, home_claim: str,
                groups: Iterable[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volume_mounts) for one user's notebook pod.

    `home_claim` is the user's own claim (KubeSpawner's `pvc_name`, `home-<user>`: one per user, shared by all
    their servers, created by KubeSpawner's `storage_pvc_ensure`)."""
    storage = facility.storage
    groups = sorted(set(groups))
    volumes: list[dict[str, Any]] = [
        {"name": "home", "persistentVolumeClaim": {"claimName": home_claim}},
        # PyTorch DataLoader workers pass batches through shared memory; the container default (64Mi) is
        # too small, so /dev/shm is a RAM-backed emptyDir with the facility's size limit.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": storage.shm_size}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "home", "mountPath": storage.home_mount_path},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    for group in member_groups(facility, groups):
        vol = f"group-{safe_slug(group)}"
        volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": group_claim(group)}})
        mounts.append({"name": vol, "mountPath": f"{storage.group_mount_root.rstrip('/')}/{group}"})
    for ds in storage.datasets:
        if ds.groups and not set(ds.groups) & set(groups):
            continue
        vol = f"dataset-{ds.name}"
        volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": dataset_claim(ds.name),
                                                               "readOnly": ds.read_only}})
        mounts.append({"name": vol, "mountPath": ds.mount_path, "readOnly": ds.read_only})
    return volumes, mounts


def shared_claims(facility: Facility, groups: Iterable[str]) -> list[tuple[str, str, str]]:
    """(claim name, kind, what) of the shared claims a user's pod needs besides its home."""
    groups = sorted(set(groups))
    claims = [(group_claim(g), "group", g) for g in member_groups(facility, groups)]
    claims += [(dataset_claim(d.name), "dataset", d.name) for d in facility.storage.datasets
               if not d.groups or set(d.groups) & set(groups)]
    return claims


def pvc_manifest(name: str, storage: Storage, size: str, kind: str, what: str) -> dict[str, Any]:
    """A ReadWriteMany claim on the facility's storage class (a dict body for kubernetes_asyncio)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {STORAGE_LABEL: kind, "app.kubernetes.io/managed-by": "aifacility"},
                     "annotations": {"aifacility.io/for": what}},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": storage.storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


class Claims:
    """Creates the claims a user's pods mount where they do not exist yet. Sessions, jobs and Dask workers mount
    the same home and group directories, and whichever starts first (a job before any session) makes them.
    `core`: a kubernetes_asyncio CoreV1Api. Claims are never deleted by the facility, so each is checked once per
    process."""

    def __init__(self, core: Any, namespace: str, facility: Facility,
                 log: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> None:
        self.core, self.ns, self.facility = core, namespace, facility
        self.log = log or logging.getLogger(__name__)
        self._seen: set[str] = set()

    async def ensure(self, name: str, size: str, kind: str, what: str) -> None:
        if name in self._seen:
            return
        try:
            await self.core.read_namespaced_persistent_volume_claim(name, self.ns, _request_timeout=30)
        except ApiException as e:
            if e.status != 404:
                raise
            try:
                await self.core.create_namespaced_persistent_volume_claim(
                    self.ns, pvc_manifest(name, self.facility.storage, size, kind, what), _request_timeout=30)
                self.log.info("Created %s claim %s for %s", kind, name, what)
            except ApiException as e2:
                if e2.status != 409:  # 409: made meanwhile by another part of the facility
                    raise
        self._seen.add(name)

    async def ensure_shared(self, groups: Iterable[str]) -> None:
        """The group and dataset claims of a member of `groups`."""
        fs = self.facility.storage
        for name, kind, what in shared_claims(self.facility, groups):
            await self.ensure(name, fs.group_size if kind == "group" else fs.dataset_size, kind, what)

    async def ensure_all(self, home_claim: str, user: str, groups: Iterable[str]) -> None:
        """The user's home claim and their shared ones."""
        await self.ensure(home_claim, self.facility.storage.home_size, "home", user)
        await self.ensure_shared(groups)
