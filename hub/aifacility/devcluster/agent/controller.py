"""The node agent: the kubelet side of every node, dispatching each bound pod to its node's provider.

Local nodes get a LocalProcessProvider; interLink virtual nodes are left alone until their provider is
registered with `register_provider` (by the interLink integration), exactly like a node without a kubelet.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.devices import DeviceManager
from aifacility.devcluster.agent.events import EventRecorder
from aifacility.devcluster.agent.informer import cancel_all, follow
from aifacility.devcluster.agent.ipam import PodIPs, choose_block
from aifacility.devcluster.agent.local import LocalProcessProvider
from aifacility.devcluster.agent.provider import Pod, PodLifecycleHandler
from aifacility.devcluster.agent.runner import NodeContext
from aifacility.devcluster.agent.status import merge_conditions
from aifacility.devcluster.nodes import local_node_names, node_ip
from aifacility.devcluster.store import NotFound, Store, StoreError

log = logging.getLogger(__name__)


class _UidChanged(Exception):
    """The pod was deleted and recreated under the same name: the old pod's status must not land on it."""


class NodeAgent:
    """Controller: `start(cluster)` / `stop()`; one provider per node."""

    def __init__(self, *, backoff_base: float = 1.0, backoff_max: float = 30.0) -> None:
        self._providers: dict[str, PodLifecycleHandler] = {}
        self._local: dict[str, LocalProcessProvider] = {}
        self._known: dict[str, str] = {}  # pod uid -> node
        self._deleting: set[str] = set()
        self._meta: dict[str, tuple[Any, Any]] = {}  # pod uid -> (labels, annotations) last seen
        self._tasks: list[asyncio.Task[Any]] = []
        self._pod_tasks: set[asyncio.Task[Any]] = set()
        self._store: Store | None = None
        self._backoff = (backoff_base, backoff_max)
        self.ips = PodIPs()

    def register_provider(self, node_name: str, provider: PodLifecycleHandler) -> None:
        """Serve a node's pods with this provider (e.g. an interLink virtual node); before or after start."""
        self._providers[node_name] = provider
        if self._store is not None:
            items, _ = self._store.list(kinds.POD, field_selector=f"spec.nodeName={node_name}")
            for pod in items:
                self._on_pod("ADDED", pod)

    def provider(self, node_name: str) -> PodLifecycleHandler | None:
        return self._providers.get(node_name)

    async def start(self, cluster: Any) -> None:
        store: Store = cluster.store
        self._store = store
        self.ips = PodIPs(choose_block(cluster.state_dir))
        events = EventRecorder(store, "kubelet")
        for name in local_node_names(cluster.facility):
            node = store.get(kinds.NODE, None, name)
            allocatable = dict((node.get("status") or {}).get("allocatable") or {})
            ctx = NodeContext(
                name=name, ip=node_ip(node), allocatable=allocatable,
                state_dir=cluster.state_dir, lookup=self._lookup, notify=self.notify, events=events,
                api_host=cluster.host, api_port=cluster.port,
                backoff_base=self._backoff[0], backoff_max=self._backoff[1],
                devices=DeviceManager(name, allocatable))
            provider = LocalProcessProvider(ctx, self.ips)
            self._local[name] = provider
            self._providers.setdefault(name, provider)
        pods, _ = store.list(kinds.POD)
        for pod in pods:  # addresses already handed out survive a restart
            ip = (pod.get("status") or {}).get("podIP")
            if ip and pod["spec"].get("nodeName") in self._local:
                self.ips.reserve(pod["metadata"]["uid"], ip)
        synced = asyncio.Event()
        self._tasks.append(asyncio.create_task(follow(store, kinds.POD, self._on_pod, synced=synced)))
        await synced.wait()

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        for t in list(self._pod_tasks):
            t.cancel()
        await asyncio.gather(*self._pod_tasks, return_exceptions=True)
        await asyncio.gather(*(p.shutdown() for p in self._local.values()), return_exceptions=True)

    def pids(self) -> list[int]:
        """The sandbox processes running now (tests check that none outlive the cluster)."""
        return [pid for p in self._local.values() for pid in p.pids()]

    # ---- store access for providers --------------------------------------------------------------------------

    def _lookup(self, namespace: str) -> Any:
        kind_of = {"Secret": kinds.SECRET, "ConfigMap": kinds.CONFIGMAP, "PersistentVolumeClaim": kinds.PVC}

        def lookup(kind: str, name: str) -> dict[str, Any] | None:
            assert self._store is not None
            try:
                return self._store.get(kind_of[kind], namespace, name)
            except NotFound:
                return None

        return lookup

    def notify(self, pod: Pod, status: dict[str, Any]) -> None:
        """Write a provider's status for a pod (virtual-kubelet's NotifyPods); conditions are merged."""
        assert self._store is not None
        uid = pod["metadata"]["uid"]

        def apply(current: dict[str, Any]) -> None:
            if current["metadata"].get("uid") != uid:
                raise _UidChanged
            old = current.get("status") or {}
            new = {**old, **status}
            new["conditions"] = merge_conditions(old.get("conditions") or [], list(status.get("conditions") or []))
            current["status"] = new

        try:
            self._store.modify(kinds.POD, pod["metadata"].get("namespace"), pod["metadata"]["name"], apply,
                               subresource="status")
        except (_UidChanged, StoreError):
            pass

    # ---- pod events ------------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pod_tasks.add(task)
        task.add_done_callback(self._pod_tasks.discard)

    def _on_pod(self, event: str, pod: Pod) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        uid = pod["metadata"]["uid"]
        if event == "DELETED":
            # Gone from the API (forced deletion, or after our own removal): make sure nothing still runs.
            known_node = self._known.pop(uid, None)
            self._meta.pop(uid, None)
            provider = self._providers.get(known_node or "")
            if provider is not None and uid not in self._deleting:
                forced = {**pod, "metadata": {**pod["metadata"], "deletionGracePeriodSeconds": 0}}
                self._spawn(provider.delete_pod(forced))
            self._deleting.discard(uid)
            return
        provider = self._providers.get(node or "")
        if provider is None:
            return
        if pod["metadata"].get("deletionTimestamp"):
            if uid in self._deleting:
                return
            self._deleting.add(uid)
            self._spawn(self._delete(provider, pod, started=uid in self._known))
            return
        meta = pod["metadata"]
        visible = (meta.get("labels"), meta.get("annotations"))
        if uid not in self._known:
            self._known[uid] = str(node)
            self._meta[uid] = visible
            self._spawn(self._create(provider, pod))
        elif self._meta.get(uid) != visible:
            # Only what the downward API shows can change on a running pod (the spec is immutable).
            self._meta[uid] = visible
            self._spawn(provider.update_pod(pod))

    async def _create(self, provider: PodLifecycleHandler, pod: Pod) -> None:
        try:
            await provider.create_pod(pod)
        except Exception:
            log.exception("creating pod %s/%s failed", pod["metadata"].get("namespace"), pod["metadata"]["name"])

    async def _delete(self, provider: PodLifecycleHandler, pod: Pod, *, started: bool) -> None:
        assert self._store is not None
        if started:
            try:
                await provider.delete_pod(pod)
            except Exception:
                log.exception("stopping pod %s/%s failed", pod["metadata"].get("namespace"), pod["metadata"]["name"])
        try:
            current = self._store.get(kinds.POD, pod["metadata"].get("namespace"), pod["metadata"]["name"])
            if current["metadata"].get("uid") == pod["metadata"]["uid"]:
                self._store.remove(kinds.POD, pod["metadata"].get("namespace"), pod["metadata"]["name"])
        except StoreError:
            pass
