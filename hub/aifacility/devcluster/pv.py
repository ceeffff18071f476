"""PersistentVolumeClaim binding: a dynamic provisioner that binds every claim at once to a directory.

Each claim gets a PersistentVolume `pvc-<claim uid>` backed by `<state_dir>/volumes/<namespace>/<claim>`
(what the node agent mounts), so data written to a claim survives pod and cluster restarts. Deleting the claim
deletes the volume and its data, as the Delete reclaim policy of dynamically provisioned volumes does.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.events import EventRecorder
from aifacility.devcluster.agent.informer import cancel_all, follow
from aifacility.devcluster.agent.volumes import pvc_path
from aifacility.devcluster.store import AlreadyExists, NotFound, Store, StoreError

PROVISIONER = "aifacility.io/devcluster-hostpath"


class VolumeBinder:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []
        self._store: Store | None = None
        self._state_dir = Path(".")
        self._events: EventRecorder | None = None

    async def start(self, cluster: Any) -> None:
        self._store = cluster.store
        self._state_dir = cluster.state_dir
        self._events = EventRecorder(cluster.store, "persistentvolume-controller")
        self._tasks.append(asyncio.create_task(follow(cluster.store, kinds.PVC, self._on_claim)))

    async def stop(self) -> None:
        await cancel_all(self._tasks)

    def _on_claim(self, event: str, claim: dict[str, Any]) -> None:
        if event == "DELETED":
            self._release(claim)
        elif (claim.get("status") or {}).get("phase") != "Bound" and not claim["metadata"].get("deletionTimestamp"):
            self._bind(claim)

    def _bind(self, claim: dict[str, Any]) -> None:
        assert self._store is not None and self._events is not None
        meta = claim["metadata"]
        ns, name = meta.get("namespace", "default"), meta["name"]
        spec = claim.get("spec") or {}
        size = str(((spec.get("resources") or {}).get("requests") or {}).get("storage") or "1Gi")
        modes = list(spec.get("accessModes") or ["ReadWriteOnce"])
        path = pvc_path(self._state_dir, ns, name)
        path.mkdir(parents=True, exist_ok=True)
        pv_name = spec.get("volumeName") or f"pvc-{meta['uid']}"
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": modes,
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or "",
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name,
                             "uid": meta["uid"]},
            },
        }
        try:
            with contextlib.suppress(AlreadyExists):
                self._store.create(kinds.PV, pv)
            self._store.modify(kinds.PV, None, pv_name,
                               lambda o: o.setdefault("status", {}).update({"phase": "Bound"}), subresource="status")

            def bind_spec(c: dict[str, Any]) -> None:
                c["spec"]["volumeName"] = pv_name
                ann = c["metadata"].setdefault("annotations", {})
                ann.update({"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
                            "volume.kubernetes.io/storage-provisioner": PROVISIONER})

            self._store.modify(kinds.PVC, ns, name, bind_spec)
            self._store.modify(kinds.PVC, ns, name, lambda c: c.__setitem__("status", {
                "phase": "Bound", "accessModes": modes, "capacity": {"storage": size}}), subresource="status")
        except StoreError as e:
            self._events.record(claim, "ProvisioningFailed", str(e), type="Warning")
            return
        self._events.record(claim, "ProvisioningSucceeded",
                            f"Successfully provisioned volume {pv_name}")

    def _release(self, claim: dict[str, Any]) -> None:
        assert self._store is not None
        meta = claim["metadata"]
        pv_name = (claim.get("spec") or {}).get("volumeName") or f"pvc-{meta['uid']}"
        try:
            pv = self._store.get(kinds.PV, None, pv_name)
        except NotFound:
            return
        if ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") != meta["uid"]:
            return
        with contextlib.suppress(StoreError):
            self._store.delete(kinds.PV, None, pv_name)
        shutil.rmtree(pvc_path(self._state_dir, meta.get("namespace", "default"), meta["name"]),
                      ignore_errors=True)
