"""Workload facts shared by the admission loop and the visibility API: conditions, order, queue resolution."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aifacility.devcluster.selectors import SelectorError, matches_label_selector_dict
from aifacility.devcluster.store import now_rfc3339

Obj = dict[str, Any]
# Creation timestamps have one-second resolution; this keeps Workloads created in the same second in order.
SEQUENCE_ANNOTATION = "devcluster.aifacility.io/queue-sequence"


def condition(wl: Mapping[str, Any], ctype: str) -> Obj | None:
    for c in (wl.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def is_true(wl: Mapping[str, Any], ctype: str) -> bool:
    c = condition(wl, ctype)
    return bool(c and c.get("status") == "True")


def has_quota(wl: Mapping[str, Any]) -> bool:
    return is_true(wl, "QuotaReserved") and not is_true(wl, "Finished")


def is_pending(wl: Mapping[str, Any]) -> bool:
    return not is_true(wl, "QuotaReserved") and not is_true(wl, "Finished")


def set_condition(status: Obj, ctype: str, state: str, reason: str, message: str,
                  generation: int | None = None) -> bool:
    """Set a metav1.Condition in `status`; the transition time moves only when the status does. Changed?"""
    conditions: list[Obj] = status.setdefault("conditions", [])
    for c in conditions:
        if c.get("type") == ctype:
            if (c.get("status"), c.get("reason"), c.get("message")) == (state, reason, message):
                return False
            if c.get("status") != state:
                c["lastTransitionTime"] = now_rfc3339()
            c.update(status=state, reason=reason, message=message)
            if generation is not None:
                c["observedGeneration"] = generation
            return True
    new: Obj = {"type": ctype, "status": state, "reason": reason, "message": message,
                "lastTransitionTime": now_rfc3339()}
    if generation is not None:
        new["observedGeneration"] = generation
    conditions.append(new)
    return True


def priority(wl: Mapping[str, Any]) -> int:
    return int((wl.get("spec") or {}).get("priority") or 0)


def order_key(wl: Mapping[str, Any]) -> tuple[int, str, int, str]:
    """Kueue's queue order: higher priority first, then older first (creation time, then creation order)."""
    meta = wl.get("metadata") or {}
    seq = int((meta.get("annotations") or {}).get(SEQUENCE_ANNOTATION) or 0)
    return (-priority(wl), meta.get("creationTimestamp") or "", seq, meta.get("name") or "")


def namespace_selected(selector: Mapping[str, Any] | None, namespace: Mapping[str, Any] | None) -> bool:
    """A ClusterQueue's namespaceSelector: null selects no namespace, {} selects every one."""
    if selector is None or namespace is None:
        return False
    try:
        return matches_label_selector_dict((namespace.get("metadata") or {}).get("labels") or {}, selector)
    except SelectorError:
        return False


class Queues:
    """The LocalQueue → ClusterQueue mapping at one moment, and why a workload cannot be queued."""

    def __init__(self, local_queues: list[Obj], cluster_queues: list[Obj]) -> None:
        self.local = {(lq["metadata"]["namespace"], lq["metadata"]["name"]): lq for lq in local_queues}
        self.cluster = {cq["metadata"]["name"]: cq for cq in cluster_queues}

    def cluster_queue_of(self, wl: Mapping[str, Any]) -> str | None:
        key = ((wl.get("metadata") or {}).get("namespace", ""), (wl.get("spec") or {}).get("queueName", ""))
        lq = self.local.get(key)
        if lq is None:
            return None
        cq = (lq.get("spec") or {}).get("clusterQueue")
        return cq if cq in self.cluster else None

    def problem(self, wl: Mapping[str, Any]) -> str | None:
        ns = (wl.get("metadata") or {}).get("namespace", "")
        queue = (wl.get("spec") or {}).get("queueName") or ""
        if not queue:
            return "the workload has no spec.queueName"
        lq = self.local.get((ns, queue))
        if lq is None:
            return f"LocalQueue {queue} doesn't exist"
        cq = (lq.get("spec") or {}).get("clusterQueue")
        if cq not in self.cluster:
            return f"ClusterQueue {cq} doesn't exist"
        return None
