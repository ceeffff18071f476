"""One node's kubelet over the real API: registration, heartbeats, and the pods bound to the node.

Each node authenticates as `system:node:<name>` (so the API server's Node authorizer and NodeRestriction
admission limit it to its own Node, Lease and pods, and to the Secrets, ConfigMaps and claims those pods use).
Pods are handed to the node's provider (`PodLifecycleHandler`); the provider's status reports are written to
the pod's status subresource, and once a deleted pod's containers are gone the pod object is removed, as the
kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aifacility.embedded.kubeclient import STRATEGIC, ApiError, KubeClient, cancel_all, follow
from aifacility.embedded.nodeagent.events import now
from aifacility.embedded.nodeagent.provider import Pod, PodLifecycleHandler
from aifacility.embedded.nodeagent.references import PATHS, prefetch, volume_references

log = logging.getLogger(__name__)

LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
STATUS_SECONDS = 60.0
# How often the Secrets and ConfigMaps that running pods mount are read again (the kubelet's sync period is a
# minute plus its cache's TTL): a job's IAM token, refreshed by the jobs service, reaches its file this fast.
VOLUME_SYNC_SECONDS = 10.0


class NodeKubelet:
    def __init__(self, client: KubeClient, node: dict[str, Any]) -> None:
        self.client = client
        self.node = node
        self.name: str = node["metadata"]["name"]
        self.provider: PodLifecycleHandler | None = None
        self.pods: dict[tuple[str, str], Pod] = {}  # (namespace, name) -> the newest pod object seen
        self._known: set[str] = set()  # uids handed to the provider
        self._deleting: set[str] = set()
        self._meta: dict[str, tuple[Any, Any]] = {}
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (namespace, kind, name) -> object
        self._fetching: set[tuple[str, str, str]] = set()
        self._tokens: dict[str, str] = {}  # pod uid -> its service-account token
        self._status: dict[str, tuple[Pod, dict[str, Any]]] = {}  # uid -> newest status not yet written
        self._writers: dict[str, asyncio.Task[Any]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._pod_tasks: set[asyncio.Task[Any]] = set()

    # ---- registration and heartbeat ---------------------------------------------------------------------------

    async def register(self) -> None:
        """Create the Node (labels and taints at registration, as `--register-with-taints`), then its status."""
        path = f"/api/v1/nodes/{self.name}"
        existing = await self.client.get(path)
        if existing is None:
            body = {k: v for k, v in self.node.items() if k != "status"}
            await self.client.create("/api/v1/nodes", body)
        else:
            await self.client.patch(path, {"metadata": {"labels": self.node["metadata"]["labels"],
                                                        "annotations": self.node["metadata"]["annotations"]}})
        await self._post_status()

    async def _post_status(self) -> None:
        status = dict(self.node["status"])
        stamp = now()
        status["conditions"] = [{**c, "lastHeartbeatTime": stamp} for c in status["conditions"]]
        await self.client.patch(f"/api/v1/nodes/{self.name}/status", {"status": status})

    async def _heartbeat(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        last_status = asyncio.get_running_loop().time()
        while True:
            stamp = now().replace("Z", ".000000Z")
            spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": stamp}
            try:
                if await self.client.get(path) is None:
                    await self.client.create(path.rsplit("/", 1)[0], {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": "kube-node-lease",
                                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name,
                                                          "uid": self.node["metadata"].get("uid", "")}]
                                     if self.node["metadata"].get("uid") else []},
                        "spec": spec})
                else:
                    await self.client.patch(path, {"spec": spec})
                if asyncio.get_running_loop().time() - last_status > STATUS_SECONDS:
                    await self._post_status()
                    last_status = asyncio.get_running_loop().time()
            except Exception as e:  # the API server may be restarting: try again next round
                log.info("node %s: heartbeat failed: %s", self.name, e)
            await asyncio.sleep(RENEW_SECONDS)

    async def start(self, provider: PodLifecycleHandler) -> None:
        self.provider = provider
        await self.register()
        node = await self.client.get(f"/api/v1/nodes/{self.name}")
        if node is not None:
            self.node["metadata"]["uid"] = node["metadata"]["uid"]
        synced = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        self._tasks.append(asyncio.create_task(self._sync_volumes()))
        self._tasks.append(asyncio.create_task(follow(self.client, "/api/v1/pods", self._on_pod, synced=synced,
                                                      fieldSelector=f"spec.nodeName={self.name}")))
        await synced.wait()

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        for t in list(self._pod_tasks):
            t.cancel()
        await asyncio.gather(*self._pod_tasks, return_exceptions=True)
        # Statuses still queued are written before the agent goes (a stopped pod's final state must land).
        await asyncio.gather(*self._writers.values(), return_exceptions=True)

    # ---- what providers call ---------------------------------------------------------------------------------

    def lookup(self, namespace: str) -> Callable[[str, str], dict[str, Any] | None]:
        def get(kind: str, name: str) -> dict[str, Any] | None:
            obj = self._objects.get((namespace, kind, name))
            if obj is None:
                # Not there when the pod was created: fetched again in the background, so that a runner that
                # retries (a container waiting for its Secret) finds it once it exists, as the kubelet does.
                self._refetch(namespace, kind, name)
            return obj
        return get

    def _refetch(self, namespace: str, kind: str, name: str) -> None:
        key = (namespace, kind, name)
        if key in self._fetching or kind not in PATHS:
            return
        self._fetching.add(key)

        async def fetch() -> None:
            try:
                obj = await self.client.get(f"/api/v1/namespaces/{namespace}/{PATHS[kind]}/{name}")
                if obj is not None:
                    self._objects[key] = obj
            except Exception as e:  # refused or unreachable: the runner asks again at its next try
                log.info("node %s: %s %s/%s not fetched: %s", self.name, kind, namespace, name, e)
            finally:
                self._fetching.discard(key)

        self._spawn(fetch())

    def pod(self, namespace: str, name: str) -> Pod | None:
        return self.pods.get((namespace, name))

    def token(self, pod: Pod) -> str:
        return self._tokens.get(pod["metadata"]["uid"], "")

    def notify(self, pod: Pod, status: dict[str, Any]) -> None:
        """A provider's newest status for a pod (virtual-kubelet's NotifyPods): written by one task per pod,
        the newest status winning, conditions merged by type (the status subresource's strategic merge)."""
        uid = pod["metadata"]["uid"]
        self._status[uid] = (pod, status)
        if uid not in self._writers or self._writers[uid].done():
            self._writers[uid] = asyncio.get_running_loop().create_task(self._write_status(uid))

    async def _write_status(self, uid: str) -> None:
        while uid in self._status:
            pod, status = self._status.pop(uid)
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
            for attempt in range(5):
                try:
                    # The uid is a precondition: a pod recreated under the same name never gets this status.
                    await self.client.patch(path, {"metadata": {"uid": uid}, "status": status}, STRATEGIC)
                    break
                except ApiError as e:
                    if e.status == 422:  # refused (e.g. an immutable field changed): say so, retrying won't help
                        log.warning("pod %s/%s: status refused: %s", meta["namespace"], meta["name"], e)
                    if e.status in (404, 409, 422):
                        break
                    log.info("pod %s/%s: status not written (%s)", meta["namespace"], meta["name"], e)
                except Exception as e:  # the API server may be restarting
                    log.info("pod %s/%s: status not written (%s)", meta["namespace"], meta["name"], e)
                await asyncio.sleep(0.5 * (attempt + 1))

    # ---- pod events ------------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pod_tasks.add(task)
        task.add_done_callback(self._pod_tasks.discard)

    def _on_pod(self, event: str, pod: Pod) -> None:
        assert self.provider is not None
        meta = pod["metadata"]
        uid = meta["uid"]
        key = (meta["namespace"], meta["name"])
        if event == "DELETED":
            if self.pods.get(key, {}).get("metadata", {}).get("uid") == uid:
                del self.pods[key]
            self._meta.pop(uid, None)
            if uid in self._known and uid not in self._deleting:
                forced = {**pod, "metadata": {**meta, "deletionGracePeriodSeconds": 0}}
                self._spawn(self.provider.delete_pod(forced))
            self._known.discard(uid)
            self._deleting.discard(uid)
            self._forget(uid)
            return
        self.pods[key] = pod
        if meta.get("deletionTimestamp"):
            if uid not in self._deleting:
                self._deleting.add(uid)
                self._spawn(self._delete(pod, started=uid in self._known))
            return
        visible = (meta.get("labels"), meta.get("annotations"))
        if uid not in self._known:
            self._known.add(uid)
            self._meta[uid] = visible
            self._spawn(self._create(pod))
        elif self._meta.get(uid) != visible:
            # Only what the downward API shows can change on a running pod (the spec is immutable).
            self._meta[uid] = visible
            self._spawn(self.provider.update_pod(pod))

    async def _sync_volumes(self) -> None:
        """Read again, once per round, each Secret and ConfigMap that running pods' volumes render; every pod
        mounting one that changed is handed to its provider (update_pod), which brings the files up to date."""
        while True:
            await asyncio.sleep(VOLUME_SYNC_SECONDS)
            running = [p for p in self.pods.values()
                       if p["metadata"]["uid"] in self._known and p["metadata"]["uid"] not in self._deleting]
            mounts = {id(p): {(p["metadata"]["namespace"], kind, name) for kind, name in volume_references(p)}
                      for p in running}
            changed = set()
            for key in set().union(*mounts.values()):
                namespace, kind, name = key
                try:
                    obj = await self.client.get(f"/api/v1/namespaces/{namespace}/{PATHS[kind]}/{name}")
                except Exception as e:  # the API server restarting: the next round tries again
                    log.debug("node %s: %s %s/%s not read again: %s", self.name, kind, namespace, name, e)
                    continue
                if obj is not None and _version(obj) != _version(self._objects.get(key)):
                    self._objects[key] = obj
                    changed.add(key)
            for pod in running:
                if mounts[id(pod)] & changed and self.provider is not None:
                    self._spawn(self.provider.update_pod(pod))

    def _forget(self, uid: str) -> None:
        self._tokens.pop(uid, None)

    async def _create(self, pod: Pod) -> None:
        assert self.provider is not None
        meta = pod["metadata"]
        try:
            objects, token = await prefetch(self.client, pod)
            for (kind, name), obj in objects.items():
                self._objects[(meta["namespace"], kind, name)] = obj
            if token:
                self._tokens[meta["uid"]] = token
            await self.provider.create_pod(pod)
        except Exception:
            log.exception("creating pod %s/%s failed", meta["namespace"], meta["name"])

    async def _delete(self, pod: Pod, *, started: bool) -> None:
        assert self.provider is not None
        meta = pod["metadata"]
        if started:
            try:
                await self.provider.delete_pod(pod)
            except Exception:
                log.exception("stopping pod %s/%s failed", meta["namespace"], meta["name"])
        # The final status first, then the object goes (grace period 0, for this uid only).
        writer = self._writers.get(meta["uid"])
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer
        with contextlib.suppress(ApiError):
            await self.client.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                     {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})


def _version(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")
