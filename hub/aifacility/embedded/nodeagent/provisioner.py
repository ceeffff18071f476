"""A dynamic volume provisioner for the embedded cluster's StorageClass, as an external provisioner works.

The controller manager's PV controller marks claims of the class with `volume.kubernetes.io/storage-provisioner`;
this provisioner then creates a PersistentVolume for the claim (a directory under `<state-dir>/volumes/<ns>/<claim>`,
what the node agent mounts), with the claim in its claimRef, and the PV controller binds the two. When a
released volume's reclaim policy is Delete, the provisioner deletes the volume and its data.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

from aifacility.embedded.kubeclient import ApiError, KubeClient, cancel_all, follow
from aifacility.embedded.nodeagent.volumes import pvc_path

log = logging.getLogger(__name__)

PROVISIONER = "aifacility.io/local"
STORAGE_CLASS = "aifacility-local"
PROVISIONER_USER = "system:aifacility:volume-provisioner"


def storage_class(name: str = STORAGE_CLASS, default: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": meta,
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}


def rbac() -> list[dict[str, Any]]:
    """What the provisioner may do (the rules of the sig-storage external provisioners)."""
    name = "aifacility-volume-provisioner"
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": [
             {"apiGroups": [""], "resources": ["persistentvolumes"],
              "verbs": ["get", "list", "watch", "create", "delete"]},
             {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "subjects": [{"kind": "User", "name": PROVISIONER_USER, "apiGroup": "rbac.authorization.k8s.io"}],
         "roleRef": {"kind": "ClusterRole", "name": name, "apiGroup": "rbac.authorization.k8s.io"}},
    ]


class VolumeProvisioner:
    def __init__(self, client: KubeClient, state_dir: Path) -> None:
        self.client = client
        self.state_dir = state_dir
        self._tasks: list[asyncio.Task[Any]] = []
        self._classes: dict[str, str] = {}  # class name -> provisioner

    async def start(self) -> None:
        synced = asyncio.Event()
        self._tasks.append(asyncio.create_task(follow(
            self.client, "/apis/storage.k8s.io/v1/storageclasses", self._on_class, synced=synced)))
        await synced.wait()
        self._tasks.append(asyncio.create_task(follow(self.client, "/api/v1/persistentvolumeclaims", self._on_claim)))
        self._tasks.append(asyncio.create_task(follow(self.client, "/api/v1/persistentvolumes", self._on_volume)))

    async def stop(self) -> None:
        await cancel_all(self._tasks)

    def _on_class(self, event: str, sc: dict[str, Any]) -> None:
        if event == "DELETED":
            self._classes.pop(sc["metadata"]["name"], None)
        else:
            self._classes[sc["metadata"]["name"]] = sc.get("provisioner", "")

    def _on_claim(self, event: str, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        wanted = (meta.get("annotations") or {}).get("volume.kubernetes.io/storage-provisioner")
        if event == "DELETED" or wanted != PROVISIONER or (claim.get("spec") or {}).get("volumeName"):
            return
        if (claim.get("status") or {}).get("phase") == "Pending" and not meta.get("deletionTimestamp"):
            asyncio.get_running_loop().create_task(self._provision(claim))

    async def _provision(self, claim: dict[str, Any]) -> None:
        meta, spec = claim["metadata"], claim.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        path = pvc_path(self.state_dir, ns, name)
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        size = str(((spec.get("resources") or {}).get("requests") or {}).get("storage") or "1Gi")
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": size}, "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": spec.get("storageClassName") or "",
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name,
                             "uid": meta["uid"]},
            },
        }
        try:
            await self.client.create("/api/v1/persistentvolumes", pv)
        except ApiError as e:
            if e.status != 409:  # 409: provisioned already (a second event for the same claim)
                log.warning("provisioning a volume for %s/%s failed: %s", ns, name, e)

    def _on_volume(self, event: str, pv: dict[str, Any]) -> None:
        meta, spec = pv["metadata"], pv.get("spec") or {}
        ours = (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if event == "DELETED" or not ours:
            return
        released = (pv.get("status") or {}).get("phase") == "Released"
        if released and spec.get("persistentVolumeReclaimPolicy") == "Delete":
            asyncio.get_running_loop().create_task(self._delete(pv))

    async def _delete(self, pv: dict[str, Any]) -> None:
        path = Path((pv["spec"].get("hostPath") or {}).get("path") or "")
        volumes = (self.state_dir / "volumes").resolve()
        if path.is_relative_to(volumes):  # never anything outside the provisioner's own directory
            await asyncio.to_thread(shutil.rmtree, path, True)
        try:
            await self.client.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
        except ApiError as e:
            log.warning("deleting volume %s failed: %s", pv["metadata"]["name"], e)
