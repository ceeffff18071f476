"""The garbage collector: owner references, as kube-controller-manager's garbage collector honours them.

- an object whose owners are all gone is deleted (background propagation: the owner goes first);
- an owner marked for deletion with the `foregroundDeletion` finalizer stays until its dependents are gone;
- an owner marked with the `orphan` finalizer has its dependents' ownerReferences to it removed, then goes.
Owners are matched by uid, so a new object reusing a deleted owner's name does not adopt its dependents.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.events import parse_time
from aifacility.devcluster.agent.informer import cancel_all, follow
from aifacility.devcluster.kinds import Kind
from aifacility.devcluster.store import Store, StoreError

log = logging.getLogger(__name__)

EVENT_TTL_SECONDS = 3600
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
Ref = tuple[Kind, str, str]  # kind, namespace ("" for cluster-scoped), name


class GarbageCollector:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []
        self._store: Store | None = None
        self._objects: dict[str, Ref] = {}  # uid -> where the object is
        self._owners: dict[str, set[str]] = {}  # dependent uid -> owner uids
        self._dependents: dict[str, set[str]] = {}  # owner uid -> dependent uids
        self._synced = 0

    async def start(self, cluster: Any) -> None:
        self._store = cluster.store
        watched = [k for k in kinds.ALL_KINDS if k.kind != "Event"]
        events = [asyncio.Event() for _ in watched]
        for kind, synced in zip(watched, events, strict=True):
            self._tasks.append(asyncio.create_task(
                follow(cluster.store, kind, functools.partial(self._on_event, kind), synced=synced)))
        await asyncio.gather(*(e.wait() for e in events))
        self.sweep()
        self._tasks.append(asyncio.create_task(self._expire_events()))

    async def _expire_events(self) -> None:
        """Events live one hour, like the API server's --event-ttl default, so the store does not grow forever."""
        while True:
            assert self._store is not None
            cutoff = time.time() - EVENT_TTL_SECONDS
            items, _ = self._store.list(kinds.EVENT)
            for ev in items:
                stamp = parse_time(ev.get("lastTimestamp") or ev["metadata"].get("creationTimestamp"))
                if stamp is not None and stamp < cutoff:
                    with contextlib.suppress(StoreError):
                        self._store.delete(kinds.EVENT, ev["metadata"].get("namespace"), ev["metadata"]["name"])
            await asyncio.sleep(60)

    async def stop(self) -> None:
        await cancel_all(self._tasks)

    def sweep(self) -> None:
        """Delete what lost all its owners while nobody watched (e.g. across a restart), and the pods of
        nodes that are gone (the facility file no longer lists them), as the pod garbage collector does."""
        for uid, owners in list(self._owners.items()):
            if owners and not any(o in self._objects for o in owners):
                self._collect(uid)
        nodes = {name for kind, _, name in self._objects.values() if kind is kinds.NODE}
        self._delete_pods_of_missing_nodes(nodes)

    def _delete_pods_of_missing_nodes(self, nodes: set[str]) -> None:
        assert self._store is not None
        pods, _ = self._store.list(kinds.POD)
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node and node not in nodes:
                with contextlib.suppress(StoreError):
                    self._store.delete(kinds.POD, pod["metadata"].get("namespace"), pod["metadata"]["name"],
                                       grace_period_seconds=0)

    def _on_event(self, kind: Kind, event: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        uid = str(meta.get("uid", ""))
        if not uid:
            return
        if event == "DELETED":
            self._objects.pop(uid, None)
            if kind is kinds.NODE:
                self._delete_pods_of_missing_nodes(
                    {name for k, _, name in self._objects.values() if k is kinds.NODE})
            for owner in self._owners.pop(uid, set()):
                self._dependents.get(owner, set()).discard(uid)
                self._check_foreground(owner)
            for dep in list(self._dependents.pop(uid, set())):
                self._collect(dep)
            return
        self._objects[uid] = (kind, str(meta.get("namespace") or ""), str(meta["name"]))
        owners = {str(r.get("uid")) for r in meta.get("ownerReferences") or [] if r.get("uid")}
        for old in self._owners.get(uid, set()) - owners:
            self._dependents.get(old, set()).discard(uid)
        self._owners[uid] = owners
        for o in owners:
            self._dependents.setdefault(o, set()).add(uid)
        if not owners:
            self._owners.pop(uid, None)
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if ORPHAN in finalizers:
                self._orphan(uid)
            elif FOREGROUND in finalizers:
                for dep in list(self._dependents.get(uid, set())):
                    self._delete(dep, propagation="Foreground")
                self._check_foreground(uid)

    def _owner_alive(self, ref: dict[str, Any], namespace: str) -> bool:
        assert self._store is not None
        try:
            kind = kinds.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        except KeyError:
            return False  # a kind this cluster does not serve cannot own anything here
        try:
            owner = self._store.get(kind, namespace if kind.namespaced else None, str(ref.get("name", "")))
        except StoreError:
            return False
        return owner["metadata"].get("uid") == ref.get("uid")

    def _collect(self, uid: str) -> None:
        """Delete a dependent whose owners are all gone, checked against the store itself: the watch events
        of different kinds arrive in no particular order, so the index alone may be stale (as upstream, the
        collector verifies with a live read before it deletes)."""
        assert self._store is not None
        where = self._objects.get(uid)
        if where is None:
            return
        kind, ns, name = where
        try:
            obj = self._store.get(kind, ns or None, name)
        except StoreError:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs or any(self._owner_alive(r, ns) for r in refs):
            return
        self._delete(uid)

    def _delete(self, uid: str, propagation: str = "Background") -> None:
        assert self._store is not None
        where = self._objects.get(uid)
        if where is None:
            return
        kind, ns, name = where
        with contextlib.suppress(StoreError):
            self._store.delete(kind, ns or None, name, propagation_policy=propagation)

    def _orphan(self, owner_uid: str) -> None:
        assert self._store is not None
        for dep in list(self._dependents.get(owner_uid, set())):
            where = self._objects.get(dep)
            if where is None:
                continue
            kind, ns, name = where

            def drop(o: dict[str, Any]) -> None:
                refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid]
                if refs:
                    o["metadata"]["ownerReferences"] = refs
                else:
                    o["metadata"].pop("ownerReferences", None)

            with contextlib.suppress(StoreError):
                self._store.modify(kind, ns or None, name, drop)
        self._remove_finalizer(owner_uid, ORPHAN)

    def _check_foreground(self, owner_uid: str) -> None:
        assert self._store is not None
        where = self._objects.get(owner_uid)
        if where is None or self._dependents.get(owner_uid):
            return
        kind, ns, name = where
        try:
            owner = self._store.get(kind, ns or None, name)
        except StoreError:
            return
        if owner["metadata"].get("deletionTimestamp") and FOREGROUND in (owner["metadata"].get("finalizers") or []):
            self._remove_finalizer(owner_uid, FOREGROUND)

    def _remove_finalizer(self, uid: str, finalizer: str) -> None:
        assert self._store is not None
        where = self._objects.get(uid)
        if where is None:
            return
        kind, ns, name = where

        def fn(o: dict[str, Any]) -> None:
            o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or [] if f != finalizer]

        with contextlib.suppress(StoreError):
            self._store.modify(kind, ns or None, name, fn)
