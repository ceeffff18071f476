"""The batch/v1 Job controller: pods from the template, counting, back-off, deadline, suspension, TTL.

Counting is exactly-once: a finished pod is added to the Job's `succeeded`/`failed` and then annotated as
counted (the upstream controller removes its `batch.kubernetes.io/job-tracking` finalizer at that point); a
pod deleted before it was counted counts as failed, unless the controller itself deleted it (suspension,
deadline, surplus). Kueue relies on `spec.suspend`: suspending deletes the active pods, resuming creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.events import EventRecorder, now, parse_time
from aifacility.devcluster.agent.informer import Trigger, cancel_all, follow
from aifacility.devcluster.store import NotFound, Store, StoreError, invalid

log = logging.getLogger(__name__)

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
COUNTED = "batch.aifacility.io/counted"
INDEX = "batch.kubernetes.io/job-completion-index"
FAILURE_BACKOFF_BASE = 1.0
FAILURE_BACKOFF_MAX = 60.0


# Job features this controller does not emulate: refused at admission rather than silently ignored.
UNSUPPORTED_FIELDS = {
    "podFailurePolicy": "pod failure policies",
    "successPolicy": "success policies",
    "backoffLimitPerIndex": "per-index back-off limits",
    "maxFailedIndexes": "per-index back-off limits",
}


def job_admission_hook(kind: kinds.Kind, operation: str, new: dict[str, Any] | None,
                       old: dict[str, Any] | None) -> None:
    """Refuse Jobs using features the development cluster's Job controller does not implement."""
    if kind is not kinds.JOB or operation not in ("CREATE", "UPDATE") or new is None:
        return
    spec: dict[str, Any] = new["spec"] if isinstance(new.get("spec"), dict) else {}
    causes = [(f"spec.{f}", f"Forbidden: the development cluster's Job controller does not emulate {what}")
              for f, what in UNSUPPORTED_FIELDS.items() if spec.get(f) is not None]
    managed_by = spec.get("managedBy")
    if managed_by not in (None, "kubernetes.io/job-controller"):
        causes.append(("spec.managedBy", f"Forbidden: no controller {managed_by!r} runs in the development cluster"))
    if causes:
        raise invalid(kinds.JOB, str((new.get("metadata") or {}).get("name", "")), causes)


def _owner_job(pod: dict[str, Any]) -> tuple[str, str] | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return str(pod["metadata"].get("namespace")), str(ref.get("name"))
    return None


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def _is_true(job: dict[str, Any], type_: str) -> bool:
    c = _condition(job, type_)
    return c is not None and c.get("status") == "True"


def is_finished(job: dict[str, Any]) -> bool:
    return _is_true(job, "Complete") or _is_true(job, "Failed")


def _set_condition(status: dict[str, Any], type_: str, state: bool, reason: str, message: str) -> None:
    stamp = now()
    conds = status.setdefault("conditions", [])
    value = "True" if state else "False"
    for c in conds:
        if c.get("type") == type_:
            if c.get("status") != value:
                c["lastTransitionTime"] = stamp
            c.update({"status": value, "reason": reason, "message": message, "lastProbeTime": stamp})
            return
    conds.append({"type": type_, "status": value, "reason": reason, "message": message,
                  "lastProbeTime": stamp, "lastTransitionTime": stamp})


def parse_indexes(text: str | None) -> set[int]:
    """`status.completedIndexes` ("0-2,4") as a set."""
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def format_indexes(indexes: set[int]) -> str:
    """A set of indexes as `status.completedIndexes` writes it ("0-2,4")."""
    ranges: list[list[int]] = []
    for i in sorted(indexes):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _index_of(pod: dict[str, Any]) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get(INDEX)
    return int(value) if value is not None and str(value).isdigit() else None


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class JobController:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []
        self._trigger = Trigger()
        self._dirty: set[tuple[str, str]] = set()
        self._store: Store | None = None
        self._events: EventRecorder | None = None
        # Pods this controller deleted on purpose (not failures), and deletions still to be counted.
        self._expected_deletions: set[str] = set()
        self._uncounted: dict[str, dict[str, dict[str, int | None]]] = {}  # job uid -> bucket -> pod uid -> index
        self._last_failure: dict[str, float] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    async def start(self, cluster: Any) -> None:
        self._store = cluster.store
        self._events = EventRecorder(cluster.store, "job-controller")
        self._tasks.append(asyncio.create_task(follow(cluster.store, kinds.JOB, self._on_job)))
        self._tasks.append(asyncio.create_task(follow(cluster.store, kinds.POD, self._on_pod)))
        self._tasks.append(asyncio.create_task(self._loop()))

    async def stop(self) -> None:
        for t in self._timers.values():
            t.cancel()
        await cancel_all(self._tasks)

    # ---- events -------------------------------------------------------------------------------------------------

    def _mark(self, key: tuple[str, str]) -> None:
        self._dirty.add(key)
        self._trigger.fire()

    def _on_job(self, event: str, job: dict[str, Any]) -> None:
        key = (str(job["metadata"].get("namespace")), str(job["metadata"]["name"]))
        if event == "DELETED":
            self._uncounted.pop(job["metadata"]["uid"], None)
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            return
        self._mark(key)

    def _on_pod(self, event: str, pod: dict[str, Any]) -> None:
        owner = _owner_job(pod)
        if owner is None:
            return
        if event == "DELETED":
            uid = pod["metadata"]["uid"]
            expected = uid in self._expected_deletions
            self._expected_deletions.discard(uid)
            if not (pod["metadata"].get("annotations") or {}).get(COUNTED) and not expected:
                job_uid = next((r.get("uid") for r in pod["metadata"].get("ownerReferences") or []
                                if r.get("kind") == "Job"), "")
                phase = (pod.get("status") or {}).get("phase")
                bucket = "succeeded" if phase == "Succeeded" else "failed"
                buckets = self._uncounted.setdefault(str(job_uid), {"succeeded": {}, "failed": {}})
                buckets[bucket][uid] = _index_of(pod)
        self._mark(owner)

    async def _loop(self) -> None:
        while True:
            await self._trigger.wait()
            keys, self._dirty = self._dirty, set()
            for key in sorted(keys):
                try:
                    self.reconcile(*key)
                except StoreError as e:
                    log.info("job %s/%s: %s; retrying", key[0], key[1], e)
                    self._later(key, 1.0)
                except Exception:
                    log.exception("job %s/%s failed to reconcile", *key)

    def _later(self, key: tuple[str, str], seconds: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(max(seconds, 0.05), self._mark, key)

    # ---- reconcile ----------------------------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> None:
        assert self._store is not None
        try:
            job = self._store.get(kinds.JOB, namespace, name)
        except NotFound:
            return
        if job["metadata"].get("deletionTimestamp"):
            return
        job = self._ensure_selector(job)
        uid = job["metadata"]["uid"]
        spec = job.get("spec") or {}
        pods = self._pods(job)
        status = copy.deepcopy(job.get("status") or {})
        succeeded = int(status.get("succeeded") or 0)
        failed = int(status.get("failed") or 0)
        indexed = spec.get("completionMode") == "Indexed"
        completed = parse_indexes(status.get("completedIndexes"))
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") and not (pod["metadata"].get("annotations") or {}).get(COUNTED):
                if pod["metadata"]["uid"] in self._expected_deletions and phase == "Failed":
                    # Stopped by this controller (suspension, deadline, surplus): not a failure of the work.
                    self._annotate_counted(pod)
                    continue
                if phase == "Succeeded":
                    succeeded += 1
                    if (index := _index_of(pod)) is not None:
                        completed.add(index)
                else:
                    failed += 1
                    self._last_failure[uid] = time.monotonic()
                self._annotate_counted(pod)
        pending = self._uncounted.pop(uid, None)
        if pending:
            succeeded += len(pending["succeeded"])
            completed.update(i for i in pending["succeeded"].values() if i is not None)
            failed += len(pending["failed"])
            if pending["failed"]:
                self._last_failure[uid] = time.monotonic()
        active = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and not p["metadata"].get("deletionTimestamp")]
        if indexed:
            # A index that succeeded twice (a retried pod raced its predecessor) counts once.
            succeeded = len(completed)
            status["completedIndexes"] = format_indexes(completed)
        status["succeeded"], status["failed"] = succeeded, failed
        key = (namespace, name)

        if is_finished(job):
            self._delete_pods(job, active, "job finished")
            status["active"] = 0
            status["ready"] = 0
            self._write(job, status)
            self._ttl(job, key)
            return

        completions = spec.get("completions")
        if completions is None and "parallelism" not in spec:
            completions = 1
        parallelism = int(spec.get("parallelism", 1))
        backoff_limit = int(spec.get("backoffLimit", 6))

        if spec.get("suspend"):
            self._delete_pods(job, active, "job suspended")
            active = []
            if not _is_true(job, "Suspended"):
                _set_condition(status, "Suspended", True, "JobSuspended", "Job suspended")
                self._event(job, "Suspended", "Job suspended")
            status.pop("startTime", None)
        else:
            if _is_true(job, "Suspended"):
                _set_condition(status, "Suspended", False, "JobResumed", "Job resumed")
                self._event(job, "Resumed", "Job resumed")
            status.setdefault("startTime", now())
            deadline = spec.get("activeDeadlineSeconds")
            started = parse_time(status.get("startTime"))
            finished_reason = ""
            if deadline is not None and started is not None and time.time() - started >= int(deadline):
                finished_reason = "DeadlineExceeded"
            elif failed > backoff_limit:
                finished_reason = "BackoffLimitExceeded"
            if finished_reason:
                message = ("Job was active longer than specified deadline" if finished_reason == "DeadlineExceeded"
                           else "Job has reached the specified backoff limit")
                self._delete_pods(job, active, finished_reason)
                active = []
                _set_condition(status, "FailureTarget", True, finished_reason, message)
                _set_condition(status, "Failed", True, finished_reason, message)
                self._event(job, finished_reason, message, warning=True)
                status["active"] = 0
                status["ready"] = 0
                self._write(job, status)
                self._ttl(job, key)
                return
            done = (succeeded >= completions) if completions is not None else (succeeded > 0 and not active)
            if done:
                self._delete_pods(job, active, "job complete")
                active = []
                _set_condition(status, "SuccessCriteriaMet", True, "CompletionsReached",
                               "Reached expected number of succeeded pods")
                _set_condition(status, "Complete", True, "CompletionsReached",
                               "Reached expected number of succeeded pods")
                status["completionTime"] = now()
                self._event(job, "Completed", "Job completed")
                status["active"] = 0
                status["ready"] = 0
                self._write(job, status)
                self._ttl(job, key)
                return
            if completions is not None:
                want = min(parallelism, int(completions) - succeeded)
            else:
                want = parallelism if succeeded == 0 else 0
            if deadline is not None and started is not None:
                self._later(key, started + int(deadline) - time.time())
            if want > len(active):
                wait = self._failure_backoff(uid, failed)
                if wait > 0:
                    self._later(key, wait)
                else:
                    running_indexes = {_index_of(p) for p in active}
                    missing = [i for i in range(int(completions or 0))
                               if i not in completed and i not in running_indexes] if indexed else []
                    for n in range(want - len(active)):
                        if indexed and n >= len(missing):
                            break
                        created = self._create_pod(job, missing[n] if indexed else None)
                        if created is not None:
                            active.append(created)
            elif want < len(active):
                surplus = sorted(active, key=lambda p: p["metadata"].get("creationTimestamp") or "")[want:]
                self._delete_pods(job, surplus, "surplus")
                active = [p for p in active if p not in surplus]
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if _pod_ready(p))
        status.setdefault("terminating", 0)
        self._write(job, status)

    def _failure_backoff(self, uid: str, failed: int) -> float:
        if failed == 0 or uid not in self._last_failure:
            return 0.0
        delay = min(FAILURE_BACKOFF_BASE * 2 ** (failed - 1), FAILURE_BACKOFF_MAX)
        return self._last_failure[uid] + delay - time.monotonic()

    def _ensure_selector(self, job: dict[str, Any]) -> dict[str, Any]:
        """What the API server's Job strategy adds at creation: the controller-uid selector and labels."""
        assert self._store is not None
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        labels = ((job.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        if (job.get("spec") or {}).get("selector") and labels.get(CONTROLLER_UID) == uid:
            return job

        def fn(j: dict[str, Any]) -> None:
            spec = j.setdefault("spec", {})
            if not spec.get("manualSelector"):
                spec["selector"] = {"matchLabels": {CONTROLLER_UID: uid}}
            tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
            tmeta.setdefault("labels", {}).update({CONTROLLER_UID: uid, JOB_NAME: name, "controller-uid": uid,
                                                   "job-name": name})
            j["metadata"].setdefault("labels", {}).update({CONTROLLER_UID: uid, JOB_NAME: name,
                                                           "controller-uid": uid, "job-name": name})

        return self._store.modify(kinds.JOB, job["metadata"].get("namespace"), name, fn)

    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        assert self._store is not None
        uid = job["metadata"]["uid"]
        pods, _ = self._store.list(kinds.POD, job["metadata"].get("namespace"))
        return [p for p in pods if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]

    def _create_pod(self, job: dict[str, Any], index: int | None = None) -> dict[str, Any] | None:
        assert self._store is not None
        meta = job["metadata"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{meta['name']}-",
                "namespace": meta.get("namespace"),
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": template.get("spec") or {},
        }
        if index is not None:
            # What the upstream controller does for Indexed Jobs: the index as annotation, label, hostname
            # and JOB_COMPLETION_INDEX in every container.
            pod["metadata"]["generateName"] = f"{meta['name']}-{index}-"
            pod["metadata"]["annotations"][INDEX] = str(index)
            pod["metadata"]["labels"][INDEX] = str(index)
            pod["spec"].setdefault("hostname", f"{meta['name']}-{index}")
            ref = {"name": "JOB_COMPLETION_INDEX",
                   "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX}']"}}}
            for c in [*(pod["spec"].get("initContainers") or []), *(pod["spec"].get("containers") or [])]:
                c["env"] = [*(c.get("env") or []), ref]
        try:
            created = self._store.create(kinds.POD, pod)
        except StoreError as e:
            self._event(job, "FailedCreate", f"Error creating: {e}", warning=True)
            return None
        self._event(job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return created

    def _delete_pods(self, job: dict[str, Any], pods: list[dict[str, Any]], _why: str) -> None:
        assert self._store is not None
        for p in pods:
            self._expected_deletions.add(p["metadata"]["uid"])
            with contextlib.suppress(StoreError):
                self._store.delete(kinds.POD, p["metadata"].get("namespace"), p["metadata"]["name"])
                self._event(job, "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}")

    def _annotate_counted(self, pod: dict[str, Any]) -> None:
        assert self._store is not None
        with contextlib.suppress(StoreError):
            self._store.modify(kinds.POD, pod["metadata"].get("namespace"), pod["metadata"]["name"],
                               lambda p: p["metadata"].setdefault("annotations", {}).update({COUNTED: "true"}))

    def _write(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        assert self._store is not None
        if status == (job.get("status") or {}):
            return
        self._store.modify(kinds.JOB, job["metadata"].get("namespace"), job["metadata"]["name"],
                           lambda j: j.__setitem__("status", status), subresource="status")

    def _ttl(self, job: dict[str, Any], key: tuple[str, str]) -> None:
        assert self._store is not None
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        try:
            current = self._store.get(kinds.JOB, *key)
        except NotFound:
            return
        status = current.get("status") or {}
        finished = None
        for c in status.get("conditions") or []:
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
                finished = parse_time(c.get("lastTransitionTime"))
        if finished is None:
            return
        left = finished + int(ttl) - time.time()
        if left > 0:
            self._later(key, left)
            return
        with contextlib.suppress(StoreError):
            self._store.delete(kinds.JOB, *key, propagation_policy="Background")

    def _event(self, job: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        assert self._events is not None
        self._events.record(job, reason, message, type="Warning" if warning else "Normal")
