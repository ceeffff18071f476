"""A job as its owner sees it, from the Job, its Kueue Workload, its pod and its place in the queue (pure).

Phases: Queued (Kueue has not admitted it: with its position in the group's LocalQueue and what it waits for),
Starting (admitted, the pod is not running yet), Running, Succeeded, Failed (with the reason: a non-zero exit,
the wall-time cap, a pod that could not start).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aifacility.jobs.manifest import (
    COMMAND_ANNOTATION,
    CONTAINER,
    GROUP_LABEL,
    KIND_LABEL,
    MAX_EXEC_LABEL,
    OUTPUT_ANNOTATION,
    OWNER_ANNOTATION,
    REQUEST_ANNOTATION,
)
from aifacility.kueue.positions import PendingWorkload
from aifacility.spawner.queueing import QUEUE_LABEL, waiting_for


def _condition(obj: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def owner(job: Mapping[str, Any]) -> str:
    return str(((job.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION, ""))


def admission(workload: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """{"cluster_queue", "flavors": {resource: flavor}} of an admitted Workload."""
    adm = ((workload or {}).get("status") or {}).get("admission")
    if not adm:
        return None
    flavors: dict[str, str] = {}
    for ps in adm.get("podSetAssignments") or []:
        flavors.update(ps.get("flavors") or {})
    return {"cluster_queue": adm.get("clusterQueue"), "flavors": flavors}


def borrowing(adm: Mapping[str, Any] | None, cluster_queue: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """What the group's queue holds beyond its own quota in the flavors this job was admitted to: Kueue's
    `flavorsReservation[].resources[].borrowed` of the ClusterQueue, the quota idle groups of the cohort lend.
    [] when the queue is within its quota there (or the job is not admitted)."""
    if not adm or not cluster_queue:
        return []
    wanted = {(flavor, resource) for resource, flavor in (adm.get("flavors") or {}).items()}
    status = cluster_queue.get("status") or {}
    out = []
    for fl in status.get("flavorsReservation") or status.get("flavorsUsage") or []:
        for r in fl.get("resources") or []:
            borrowed = str(r.get("borrowed") or "0")
            if (fl.get("name"), r.get("name")) in wanted and borrowed not in ("0", "0m"):
                out.append({"flavor": str(fl["name"]), "resource": str(r["name"]), "borrowed": borrowed})
    return sorted(out, key=lambda b: (b["flavor"], b["resource"]))


def _terminated(pod: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return (cs.get("state") or {}).get("terminated")
    return None


def _succeeded(job: Mapping[str, Any]) -> bool:
    return bool(_condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"))


def _failed(job: Mapping[str, Any]) -> bool:
    return bool(_condition(job, "Failed") or _condition(job, "FailureTarget"))


def ended(job: Mapping[str, Any]) -> bool:
    """The Job says it has ended (its controller's conditions), whatever its pod and Workload say."""
    return _succeeded(job) or _failed(job)


def phase(job: Mapping[str, Any], pod: Mapping[str, Any] | None, workload: Mapping[str, Any] | None) -> str:
    if _succeeded(job):
        return "Succeeded"
    if _failed(job):
        return "Failed"
    if _condition(workload, "Finished"):
        return "Failed" if (_terminated(pod) or {}).get("exitCode", 1) else "Succeeded"
    if (job.get("spec") or {}).get("suspend", False) or not admission(workload):
        return "Queued"
    pod_phase = ((pod or {}).get("status") or {}).get("phase")
    if pod_phase == "Running":
        return "Running"
    return "Starting"


def describe(job: Mapping[str, Any], pod: Mapping[str, Any] | None, workload: Mapping[str, Any] | None,
             position: PendingWorkload | None, sites: Mapping[str, str],
             cluster_queue: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The REST model of a job. `sites`: node name -> site (local or the offload target); `cluster_queue`: the
    ClusterQueue that admitted it, read while it has not ended, for what its group borrows from the cohort."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    status = job.get("status") or {}
    state = phase(job, pod, workload)
    adm = admission(workload)
    node = ((pod or {}).get("spec") or {}).get("nodeName")
    term = _terminated(pod)
    out: dict[str, Any] = {
        "name": meta.get("name"),
        "user": owner(job),
        "group": labels.get(GROUP_LABEL),
        "kind": labels.get(KIND_LABEL),
        "queue": labels.get(QUEUE_LABEL),
        "command": ann.get(COMMAND_ANNOTATION, ""),
        "phase": state,
        "created": meta.get("creationTimestamp"),
        "started": status.get("startTime"),
        "finished": status.get("completionTime") or (term or {}).get("finishedAt"),
        "max_seconds": int(labels.get(MAX_EXEC_LABEL, 0) or 0),
        "node": node,
        "site": sites.get(node) if node else None,
        "exit_code": term.get("exitCode") if term else None,
        "reason": None,
        "position": None,
        "waiting_for": None,
        "admission": adm,
        "borrowing": borrowing(adm, cluster_queue) if state in ("Starting", "Running") else [],
        "output_notebook": ann.get(OUTPUT_ANNOTATION),
        "request": _request(ann.get(REQUEST_ANNOTATION)),
    }
    if state == "Queued":
        if position is not None:
            out["position"] = position.position_in_local_queue + 1
        out["waiting_for"] = waiting_for(workload)
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if state == "Failed":
        if term and term.get("message"):  # a provider's refusal, an OOM kill: their own words
            out["reason"] = str(term["message"])[:1000]
        elif term and term.get("exitCode"):
            out["reason"] = f"the command exited with code {term['exitCode']}"
        elif failed:
            out["reason"] = failed.get("message") or failed.get("reason")
        evicted = _condition(workload, "Evicted") or _condition(workload, "Deactivated")
        if evicted and not out["reason"]:
            out["reason"] = evicted.get("message")
    return out


def line(model: Mapping[str, Any]) -> str:
    """One line of `aifacility jobs list`."""
    where = model.get("site") or "-"
    flavors = sorted(set(((model.get("admission") or {}).get("flavors") or {}).values()))
    extra = ""
    if model["phase"] == "Queued" and model.get("position"):
        extra = f"position {model['position']}"
    elif model.get("exit_code") is not None:
        extra = f"exit {model['exit_code']}"
    elif model.get("borrowing"):
        extra = "borrowing from the cohort"
    return (f"{model['name']:<48} {model['phase']:<10} {model.get('group') or '-':<10} "
            f"{','.join(flavors) or '-':<16} {where:<8} {extra}")


def _request(text: str | None) -> dict[str, Any] | None:
    """The request a job was submitted with (its annotation), or None for jobs from before it was kept."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
