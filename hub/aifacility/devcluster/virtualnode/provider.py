"""The interLink provider: a PodLifecycleHandler that runs a virtual node's pods through the plugin contract.

- create: RetrievedPodData -> `/create`; the returned job id becomes the pod annotation `JobID`. An
  unreachable plugin is retried (the pod stays Pending, its containers say why); a plugin that answers with an
  error fails the pod with reason ProviderFailed (server errors after a few attempts).
- status: one `/status` call for all the node's live pods every `status_interval` seconds.
- delete: `/delete`, retried until the plugin has it (the agent then removes the pod): a batch job must not
  outlive its pod.
A restarted development cluster finds its pods by their `JobID` annotation and does not submit them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.env import ConfigError
from aifacility.devcluster.agent.events import EventRecorder
from aifacility.devcluster.agent.provider import Pod
from aifacility.devcluster.agent.status import merge_conditions
from aifacility.devcluster.store import NotFound, Store, StoreError
from aifacility.devcluster.virtualnode.phase import TERMINAL, failed_status, pending_status, pod_status
from aifacility.devcluster.virtualnode.podspec import retrieved_pod_data
from aifacility_interlink.client import PluginClient, PluginError

log = logging.getLogger(__name__)

JOB_ID = "JobID"
# What "the plugin could not be reached" looks like from aiohttp (refused, reset, timed out, bad socket).
UNREACHABLE = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _uid(pod: Pod) -> str:
    return str(pod["metadata"]["uid"])


def _key(pod: Pod) -> tuple[str, str]:
    return str(pod["metadata"].get("namespace")), str(pod["metadata"]["name"])


def _identity(pod: Pod) -> Pod:
    meta = pod["metadata"]
    return {"apiVersion": "v1", "kind": "Pod", "spec": pod.get("spec") or {},
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "annotations", "labels") if k in meta}}


class _UidChanged(Exception):
    pass


class InterLinkProvider:
    """The pods of one virtual node, forwarded to the interLink plugin at `client.url`."""

    def __init__(self, node_name: str, client: PluginClient, store: Store, events: EventRecorder, *,
                 host_ip: str, allocatable: Callable[[], dict[str, str]], token: str,
                 status_interval: float = 5.0, retry_base: float = 1.0, retry_max: float = 30.0,
                 create_attempts: int = 3) -> None:
        self.node_name = node_name
        self.client = client
        self._store = store
        self._events = events
        self._host_ip = host_ip
        self._allocatable = allocatable
        self._token = token
        self.status_interval = status_interval
        self._retry = (retry_base, retry_max)
        self._create_attempts = create_attempts
        self._pods: dict[str, Pod] = {}  # uid -> newest pod object
        self._submitted: set[str] = set()  # uids the plugin has a job for
        self._creating: dict[str, asyncio.Task[Any]] = {}
        self._sent: set[str] = set()  # uids whose /create went out (the plugin may know them)
        self._last: dict[str, Any] = {}  # uid -> last status written (only changes are written)
        self._loop: asyncio.Task[None] | None = None

    # ---- PodLifecycleHandler -------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        uid = _uid(pod)
        if uid in self._pods or (pod.get("status") or {}).get("phase") in TERMINAL:
            return
        self._pods[uid] = pod
        if (pod["metadata"].get("annotations") or {}).get(JOB_ID):
            self._submitted.add(uid)  # submitted before a restart: only its status is followed
            return
        task = asyncio.current_task()
        if task is not None:
            self._creating[uid] = task
        try:
            await self._submit(pod)
        finally:
            self._creating.pop(uid, None)

    async def update_pod(self, pod: Pod) -> None:
        uid = _uid(pod)
        if uid in self._pods:
            self._pods[uid] = pod

    async def delete_pod(self, pod: Pod) -> None:
        uid = _uid(pod)
        creating = self._creating.pop(uid, None)
        if creating is not None and creating is not asyncio.current_task():
            creating.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await creating
        self._pods.pop(uid, None)
        self._submitted.discard(uid)
        self._last.pop(uid, None)
        sent = uid in self._sent or bool((pod["metadata"].get("annotations") or {}).get(JOB_ID))
        self._sent.discard(uid)
        if sent:
            await self.cancel_job(pod)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return next((p for p in self._pods.values() if _key(p) == (namespace, name)), None)

    async def get_pod_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = await self.get_pod(namespace, name)
        return None if pod is None else dict(pod.get("status") or {})

    async def get_pods(self) -> list[Pod]:
        return list(self._pods.values())

    async def shutdown(self) -> None:
        """The development cluster stops; the batch jobs keep running and are found again at the next start."""
        for task in list(self._creating.values()):
            task.cancel()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    # ---- create ---------------------------------------------------------------------------------------------

    async def _submit(self, pod: Pod) -> None:
        uid = _uid(pod)
        delay = self._retry[0]
        server_errors = 0
        self._write(pod, pending_status(pod, "ContainerCreating", "submitting to the interLink plugin",
                                        self._host_ip))
        while True:
            pod = self._pods.get(uid, pod)
            try:
                data = retrieved_pod_data(pod, self._lookup(pod), self._allocatable(), self._token)
                self._sent.add(uid)
                created = await self.client.create(data)
            except ConfigError as e:
                self._wait(pod, "CreateContainerConfigError", str(e))
            except PluginError as e:
                server_errors += e.status >= 500
                if e.status < 500 or server_errors >= self._create_attempts:
                    self._fail(pod, f"the interLink plugin refused the pod: {e.message}")
                    return
                self._wait(pod, "ProviderError", f"the interLink plugin answered {e.status}: {e.message}; retrying")
            except UNREACHABLE as e:
                self._wait(pod, "InterlinkUnreachable",
                           f"the interLink plugin at {self.client.url} cannot be reached ({e or type(e).__name__}); "
                           "the pod is submitted when it answers again")
            except ValueError as e:  # an answer that is not a CreateStruct
                self._fail(pod, f"the interLink plugin answered /create with something unreadable: {e}")
                return
            else:
                self._accepted(pod, created.PodJID)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry[1])

    def _lookup(self, pod: Pod) -> Callable[[str, str], dict[str, Any] | None]:
        namespace = pod["metadata"].get("namespace")
        kind_of = {"ConfigMap": kinds.CONFIGMAP, "Secret": kinds.SECRET}

        def lookup(kind: str, name: str) -> dict[str, Any] | None:
            try:
                return self._store.get(kind_of[kind], namespace, name)
            except NotFound:
                return None

        return lookup

    def _wait(self, pod: Pod, reason: str, message: str) -> None:
        if self._last.get(_uid(pod), {}).get("why") != message:
            self._events.record(pod, "FailedCreate" if reason != "CreateContainerConfigError" else "Failed",
                                message, type="Warning", host=self.node_name)
        self._write(pod, pending_status(pod, reason, message, self._host_ip), why=message)

    def _fail(self, pod: Pod, message: str) -> None:
        self._events.record(pod, "ProviderFailed", message, type="Warning", host=self.node_name)
        self._write(pod, failed_status(pod, "ProviderFailed", message))

    def _accepted(self, pod: Pod, jid: str) -> None:
        uid = _uid(pod)
        ns, name = _key(pod)

        def annotate(current: dict[str, Any]) -> None:
            if current["metadata"].get("uid") != uid:
                raise _UidChanged
            current["metadata"].setdefault("annotations", {})[JOB_ID] = jid

        try:
            updated = self._store.modify(kinds.POD, ns, name, annotate)
        except (_UidChanged, StoreError):
            return  # deleted meanwhile: delete_pod cancels the job
        self._pods[uid] = updated
        self._submitted.add(uid)
        self._events.record(updated, "Submitted", f"Submitted to the interLink plugin as batch job {jid}",
                            host=self.node_name)
        self._write(updated, pending_status(updated, "ContainerCreating", f"batch job {jid} submitted",
                                            self._host_ip))

    # ---- status ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._status_loop())

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            try:
                await self.poll()
            except UNREACHABLE as e:
                log.info("status of %s's pods not refreshed: %s", self.node_name, e or type(e).__name__)
            except PluginError as e:
                log.warning("status of %s's pods not refreshed: %s", self.node_name, e)
            except Exception:
                log.exception("status of %s's pods not refreshed", self.node_name)

    async def poll(self) -> None:
        """One `/status` call for every live submitted pod; each pod's status is written when it changed."""
        live = [p for uid, p in self._pods.items()
                if uid in self._submitted and (p.get("status") or {}).get("phase") not in TERMINAL]
        if not live:
            return
        # Only what the plugin reads: the pod's identity and spec (not its status, events or managedFields).
        statuses = await self.client.status([_identity(p) for p in live])
        by_uid = {s.UID: s for s in statuses}
        for pod in live:
            remote = by_uid.get(_uid(pod))
            if remote is None or _uid(pod) not in self._pods:
                continue
            current = self._pods[_uid(pod)]
            if remote.JID == "" and all(c.state.waiting is not None and c.state.waiting.reason == "NotKnownToPlugin"
                                        for c in remote.containers):
                jid = (current["metadata"].get("annotations") or {}).get(JOB_ID, "?")
                self._fail(current, f"the interLink plugin no longer knows this pod (batch job {jid})")
                continue
            self._write(current, pod_status(current, remote.model_dump(exclude_none=True)))

    # ---- writing ----------------------------------------------------------------------------------------------

    def _write(self, pod: Pod, status: dict[str, Any], why: str = "") -> None:
        """Merge `status` into the pod's status (None values remove a field) unless nothing changed."""
        uid = _uid(pod)
        comparable = {k: v for k, v in status.items() if k not in ("conditions", "startTime")}
        comparable["conditions"] = [(c["type"], c["status"]) for c in status.get("conditions") or []]
        if self._last.get(uid, {}).get("status") == comparable:
            return
        ns, name = _key(pod)

        def apply(current: dict[str, Any]) -> None:
            if current["metadata"].get("uid") != uid:
                raise _UidChanged
            old = current.get("status") or {}
            new = {**old, **status}
            new["conditions"] = merge_conditions(old.get("conditions") or [], list(status.get("conditions") or []))
            current["status"] = {k: v for k, v in new.items() if v is not None}

        try:
            updated = self._store.modify(kinds.POD, ns, name, apply, subresource="status")
        except (_UidChanged, StoreError):
            return
        if uid in self._pods:
            self._pods[uid] = updated
        self._last[uid] = {"status": comparable, "why": why}

    # ---- delete -----------------------------------------------------------------------------------------------

    async def cancel_job(self, pod: Pod) -> None:
        """`/delete` until the plugin has it; a pod the plugin never knew is fine."""
        delay = self._retry[0]
        while True:
            try:
                await self.client.delete(pod)
                return
            except PluginError as e:
                if e.status == 404:
                    return
                if e.status < 500:
                    log.warning("the plugin refused to delete %s/%s: %s", *_key(pod), e.message)
                    return
                log.warning("deleting %s/%s failed (%s); retrying", *_key(pod), e.message)
            except UNREACHABLE as e:
                log.info("deleting %s/%s: plugin unreachable (%s); retrying", *_key(pod), e or type(e).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry[1])
