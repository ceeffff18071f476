"""Queued sessions (the spawner side of Kueue's plain-pod integration).

A queued notebook pod carries `kueue.x-k8s.io/queue-name: <the paying group's LocalQueue>`; Kueue's webhook
gates it (`kueue.x-k8s.io/admission`) and creates a Workload owned by the pod; on admission Kueue removes the
gate. While gated the spawner shows the position in the LocalQueue (visibility API) and what the Workload waits
for (its `QuotaReserved=False` condition message), and no start timeout runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aifacility.kueue.api import JOB_UID_LABEL, KUEUE_GROUP, KUEUE_VERSION
from aifacility.kueue.positions import PendingWorkload, find_owner, local_queue_positions

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ADMISSION_GATE = "kueue.x-k8s.io/admission"


def is_gated(pod: Mapping[str, Any] | None) -> bool:
    """Whether Kueue still holds the pod (it has not been admitted yet)."""
    if not pod:
        return True
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == ADMISSION_GATE for g in gates)


def waiting_for(workload: Mapping[str, Any] | None) -> str | None:
    """What Kueue says the workload waits for: the message of its QuotaReserved=False condition."""
    for cond in ((workload or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "QuotaReserved" and cond.get("status") == "False":
            return str(cond.get("message") or cond.get("reason") or "") or None
    return None


def describe(queue: str, what: str, position: PendingWorkload | None,
             workload: Mapping[str, Any] | None, unbounded: bool = True) -> str:
    """The progress line of a spawn Kueue holds: where it stands and what it waits for.

    `unbounded`: the user asked to queue, so no start timeout runs while it waits."""
    if position is not None:
        ahead = position.position_in_local_queue
        where = "next in line" if ahead == 0 else f"position {ahead + 1} ({ahead} ahead of you)"
    else:
        where = "entering the queue"
    line = f"Queued in the '{queue}' queue for {what}: {where}."
    reason = waiting_for(workload)
    if reason:
        line += f" Waiting for: {reason.rstrip('.')}."
    if unbounded:
        line += " There is no start timeout while the session is queued; stop it to leave the queue."
    return line


async def queue_status(api_client: Any, namespace: str, queue: str, pod: Mapping[str, Any] | None,
                       what: str, unbounded: bool = True) -> str:
    """Read the pod's Workload and its position in the LocalQueue (kubernetes_asyncio ApiClient)."""
    from kubernetes_asyncio.client import CustomObjectsApi

    meta = (pod or {}).get("metadata") or {}
    workload = None
    if meta.get("uid"):
        found = await CustomObjectsApi(api_client).list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads",
            label_selector=f"{JOB_UID_LABEL}={meta['uid']}", _request_timeout=10)
        items = found.get("items") or []
        workload = items[0] if items else None
    positions = await local_queue_positions(api_client, namespace, queue)
    return describe(queue, what, find_owner(positions, "Pod", meta.get("name", "")), workload, unbounded)
