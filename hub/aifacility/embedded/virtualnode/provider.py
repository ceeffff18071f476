"""The interLink provider: a PodLifecycleHandler that runs a virtual node's pods through the plugin contract.

- create: RetrievedPodData -> `/create`; the returned job id becomes the pod annotation `JobID` (patched through
  the API, the pod's uid as precondition). An unreachable plugin is retried (the pod stays Pending, its
  containers say why); a plugin that answers with an error fails the pod with reason ProviderFailed (server
  errors after a few attempts).
- status: one `/status` call for all the node's live pods every `status_interval` seconds; each change goes to
  the kubelet loop's `notify`, which writes the pod's status subresource.
- delete: `/delete`, retried until the plugin has it (the kubelet loop then removes the pod): a batch job must
  not outlive its pod.
A restarted node agent finds its pods by their `JobID` annotation and does not submit them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from aifacility.embedded.kubeclient import ApiError, KubeClient
from aifacility.embedded.nodeagent.env import ConfigError
from aifacility.embedded.nodeagent.events import EventRecorder
from aifacility.embedded.nodeagent.provider import Notify, Pod
from aifacility.embedded.nodeagent.status import merge_conditions
from aifacility.embedded.virtualnode.phase import TERMINAL, failed_status, pending_status, pod_status
from aifacility.embedded.virtualnode.podspec import retrieved_pod_data
from aifacility_interlink.client import PluginClient, PluginError

log = logging.getLogger(__name__)

JOB_ID = "JobID"
# What "the plugin could not be reached" looks like from aiohttp (refused, reset, timed out, bad socket).
UNREACHABLE = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
Lookup = Callable[[str], Callable[[str, str], dict[str, Any] | None]]  # namespace -> (kind, name) -> object


def _uid(pod: Pod) -> str:
    return str(pod["metadata"]["uid"])


def _key(pod: Pod) -> tuple[str, str]:
    return str(pod["metadata"].get("namespace")), str(pod["metadata"]["name"])


def _identity(pod: Pod) -> Pod:
    meta = pod["metadata"]
    return {"apiVersion": "v1", "kind": "Pod", "spec": pod.get("spec") or {},
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "annotations", "labels",
                                                           "deletionGracePeriodSeconds") if k in meta}}


class InterLinkProvider:
    """The pods of one virtual node, forwarded to the interLink plugin at `client.url`.

    `api`: the virtual node's own API client; `notify`, `lookup` and `token` come from its kubelet loop (status
    writes, the objects a pod references, the pod's service-account token)."""

    def __init__(self, node_name: str, client: PluginClient, api: KubeClient, events: EventRecorder, *,
                 notify: Notify, lookup: Lookup, token: Callable[[Pod], str], host_ip: str,
                 allocatable: Callable[[], dict[str, str]], status_interval: float = 5.0, retry_base: float = 1.0,
                 retry_max: float = 30.0, create_attempts: int = 3) -> None:
        self.node_name = node_name
        self.client = client
        self._api = api
        self._events = events
        self._notify = notify
        self._lookup = lookup
        self._token = token
        self._host_ip = host_ip
        self._allocatable = allocatable
        self.status_interval = status_interval
        self._retry = (retry_base, retry_max)
        self._create_attempts = create_attempts
        self._pods: dict[str, Pod] = {}  # uid -> newest pod object
        self._submitted: set[str] = set()  # uids the plugin has a job for
        self._creating: dict[str, asyncio.Task[Any]] = {}
        self._sent: set[str] = set()  # uids whose /create went out (the plugin may know them)
        self._status: dict[str, dict[str, Any]] = {}  # uid -> the status as last written (merged)
        self._last: dict[str, Any] = {}  # uid -> what was last written, comparable, and why
        self._loop: asyncio.Task[None] | None = None

    # ---- PodLifecycleHandler -------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        uid = _uid(pod)
        if uid in self._pods or (pod.get("status") or {}).get("phase") in TERMINAL:
            return
        self._pods[uid] = pod
        self._status[uid] = dict(pod.get("status") or {})
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
        self._status.pop(uid, None)
        sent = uid in self._sent or bool((pod["metadata"].get("annotations") or {}).get(JOB_ID))
        self._sent.discard(uid)
        if sent:
            await self.cancel_job(pod)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        pod = next((p for p in self._pods.values() if _key(p) == (namespace, name)), None)
        return None if pod is None else {**pod, "status": self._status.get(_uid(pod), {})}

    async def get_pod_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = await self.get_pod(namespace, name)
        return None if pod is None else dict(pod.get("status") or {})

    async def get_pods(self) -> list[Pod]:
        return [{**p, "status": self._status.get(uid, {})} for uid, p in self._pods.items()]

    async def shutdown(self) -> None:
        """The node agent stops; the batch jobs keep running and are found again at the next start."""
        for task in list(self._creating.values()):
            task.cancel()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        with contextlib.suppress(Exception):
            await self.client.close()

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
                lookup = self._lookup(str(pod["metadata"].get("namespace")))
                data = retrieved_pod_data(pod, lookup, self._allocatable(), self._token(pod))
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
                await self._accepted(pod, created.PodJID)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry[1])

    def _wait(self, pod: Pod, reason: str, message: str) -> None:
        if self._last.get(_uid(pod), {}).get("why") != message:
            self._events.record(pod, "FailedCreate" if reason != "CreateContainerConfigError" else "Failed",
                                message, type="Warning", host=self.node_name)
        self._write(pod, pending_status(pod, reason, message, self._host_ip), why=message)

    def _fail(self, pod: Pod, message: str) -> None:
        self._events.record(pod, "ProviderFailed", message, type="Warning", host=self.node_name)
        self._write(pod, failed_status(pod, "ProviderFailed", message))

    async def _accepted(self, pod: Pod, jid: str) -> None:
        uid = _uid(pod)
        ns, name = _key(pod)
        # The uid in the patch is a precondition (it is immutable): a pod recreated under the same name is left
        # alone, and the job of the deleted one is cancelled by delete_pod.
        patch = {"metadata": {"uid": uid, "annotations": {JOB_ID: jid}}}
        for attempt in range(5):
            try:
                updated = await self._api.patch(f"/api/v1/namespaces/{ns}/pods/{name}", patch)
                break
            except ApiError as e:
                if e.status in (404, 409, 422):
                    log.info("pod %s/%s went away before its job id %s was recorded", ns, name, jid)
                    return
                log.info("pod %s/%s: job id %s not recorded yet (%s)", ns, name, jid, e)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:  # the API server may be restarting
                log.info("pod %s/%s: job id %s not recorded yet (%s)", ns, name, jid, e)
            await asyncio.sleep(0.5 * (attempt + 1))
        else:
            log.warning("pod %s/%s: job id %s could not be recorded; the job is followed until a restart",
                        ns, name, jid)
            updated = {**pod, "metadata": {**pod["metadata"],
                                           "annotations": {**(pod["metadata"].get("annotations") or {}),
                                                           JOB_ID: jid}}}
        if uid not in self._pods:
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
                if uid in self._submitted and self._status.get(uid, {}).get("phase") not in TERMINAL]
        if not live:
            return
        # Only what the plugin reads: the pod's identity and spec (not its status, events or managedFields).
        statuses = await self.client.status([_identity(p) for p in live])
        by_uid = {s.UID: s for s in statuses}
        for pod in live:
            uid = _uid(pod)
            remote = by_uid.get(uid)
            if remote is None or uid not in self._pods:
                continue
            current = {**self._pods[uid], "status": self._status.get(uid, {})}
            if remote.JID == "" and all(c.state.waiting is not None and c.state.waiting.reason == "NotKnownToPlugin"
                                        for c in remote.containers):
                jid = (current["metadata"].get("annotations") or {}).get(JOB_ID, "?")
                self._fail(current, f"the interLink plugin no longer knows this pod (batch job {jid})")
                continue
            self._write(current, pod_status(current, remote.model_dump(exclude_none=True)))

    # ---- writing ----------------------------------------------------------------------------------------------

    def _write(self, pod: Pod, status: dict[str, Any], why: str = "") -> None:
        """Send `status` to the kubelet loop (None values remove a field) unless nothing changed; conditions keep
        their lastTransitionTime while their status stays."""
        uid = _uid(pod)
        if uid not in self._pods:
            return
        comparable = {k: v for k, v in status.items() if k not in ("conditions", "startTime")}
        comparable["conditions"] = [(c["type"], c["status"]) for c in status.get("conditions") or []]
        if self._last.get(uid, {}).get("status") == comparable:
            return
        old = self._status.get(uid, {})
        status = {**status, "conditions": [c for c in merge_conditions(old.get("conditions") or [],
                                                                       list(status.get("conditions") or []))
                                           if c.get("type") != "PodScheduled"]}
        merged = {**old, **status}
        self._status[uid] = {k: v for k, v in merged.items() if v is not None}
        self._last[uid] = {"status": comparable, "why": why}
        self._notify(self._pods[uid], status)

    # ---- delete -----------------------------------------------------------------------------------------------

    async def cancel_job(self, pod: Pod) -> None:
        """`/delete` until the plugin has it; a pod the plugin never knew is fine."""
        delay = self._retry[0]
        while True:
            try:
                await self.client.delete(_identity(pod))
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
