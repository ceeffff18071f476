"""The virtual node's own status: the plugin ping, capacity from the PingResponse, Ready/InterlinkConnectivity.

Like interLink's virtual kubelet, the node starts NotReady and is Ready only while the plugin answers its
ping (`GET /status` with `[]`). While it is not Ready it carries the `node.kubernetes.io/not-ready:NoSchedule`
taint (the one Kubernetes' node lifecycle controller also adds for a NotReady node; set here at once, so that
no pod is bound in the seconds before the controller sees the condition), and new pods stay Pending instead of
being bound to a node that cannot run them.

Everything here works on plain objects: `set_ping_status` on the node object the kubelet loop posts as its
status, `taint_patch` computes the merge patch of the Node's taints and annotations from the API's copy.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aifacility.embedded.nodeagent.events import now
from aifacility.facility.quantity import parse_quantity
from aifacility_interlink.contract import PingResponse

NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
CONNECTIVITY = "InterlinkConnectivity"
# Taints the plugin asked for last time (so that they can be taken away when it stops asking).
PLUGIN_TAINTS_ANNOTATION = "interlink.virtual-kubelet.io/plugin-taints"
PING_ANNOTATION = "interlink.virtual-kubelet.io/ping-response"
INTERLINK_TAINT_KEY = "virtual-node.interlink/no-schedule"


def _cond(type_: str, status: str, reason: str, message: str, stamp: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}


def set_conditions(node: dict[str, Any], new: list[dict[str, str]]) -> None:
    """Replace the conditions of `new`'s types, keeping lastTransitionTime where the status did not change."""
    status = node.setdefault("status", {})
    conds = [c for c in status.get("conditions") or [] if c.get("type") not in {n["type"] for n in new}]
    old = {c.get("type"): c for c in status.get("conditions") or []}
    for c in new:
        prev = old.get(c["type"])
        if prev is not None and prev.get("status") == c["status"]:
            c["lastTransitionTime"] = prev.get("lastTransitionTime") or c["lastTransitionTime"]
    status["conditions"] = conds + new


def not_ready(node: dict[str, Any], reason: str, message: str) -> None:
    """Ready=False and InterlinkConnectivity=False with `message`."""
    stamp = now()
    set_conditions(node, [_cond("Ready", "False", "KubeletNotReady", message, stamp),
                          _cond(CONNECTIVITY, "False", reason, message, stamp)])


def _positive(value: str | None, fallback: str) -> str:
    """A quantity from the ping, or the configured one when it is missing, unreadable or 0 (interLink #558)."""
    if not value:
        return fallback
    try:
        return value if parse_quantity(value) > Decimal(0) else fallback
    except (ValueError, ArithmeticError):
        return fallback


def ready(node: dict[str, Any], ping: PingResponse, configured: dict[str, str]) -> None:
    """Ready, with capacity and allocatable from the PingResponse (never a bare 0)."""
    stamp = now()
    status = node.setdefault("status", {})
    capacity = dict(status.get("capacity") or configured)
    res = ping.resources
    if res is not None:
        for key in ("cpu", "memory", "pods"):
            capacity[key] = _positive(getattr(res, key), configured.get(key) or capacity.get(key) or "")
        for acc in res.accelerators:
            if acc.resourceType and acc.available >= 0:
                capacity[acc.resourceType] = str(acc.available)
    status["capacity"] = capacity
    status["allocatable"] = dict(capacity)
    set_conditions(node, [_cond("Ready", "True", "KubeletReady", "virtual kubelet is posting ready status", stamp),
                          _cond(CONNECTIVITY, "True", "InterlinkPingSuccessful",
                                "the interLink plugin answers its ping", stamp)])


def plugin_taints(ping: PingResponse) -> list[dict[str, str]]:
    """The taints a plugin asks for (its own `virtual-node.interlink/no-schedule` is the facility file's)."""
    return [{k: v for k, v in t.model_dump().items() if v is not None and v != ""} for t in ping.taints
            if t.key and t.key != INTERLINK_TAINT_KEY]


def taint_patch(node: dict[str, Any], is_ready: bool, wanted: list[dict[str, str]] | None,
                ping_raw: str | None = None) -> dict[str, Any] | None:
    """A JSON merge patch (with the node's resourceVersion, so a concurrent writer makes it fail with 409) that
    gives the API's `node` the not-ready taint unless `is_ready`, and the plugin's `wanted` taints (None: keep
    what it asked for last); None when nothing changes."""
    meta = node.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    taints: list[dict[str, Any]] = list((node.get("spec") or {}).get("taints") or [])
    previous = annotations.get(PLUGIN_TAINTS_ANNOTATION, "")
    owned = {tuple(t.split(":", 1)) for t in previous.split(",") if t}
    keep = [t for t in taints if (t.get("key"), t.get("effect")) not in owned and not _not_ready_noschedule(t)]
    if wanted is not None:
        have = {(t.get("key"), t.get("effect")) for t in keep}
        added = [t for t in wanted if (t["key"], t["effect"]) not in have]
        new_annotation = ",".join(f"{t['key']}:{t['effect']}" for t in added)
    else:  # no fresh word from the plugin: keep what it said last
        added = [t for t in taints if (t.get("key"), t.get("effect")) in owned]
        new_annotation = previous
    new = keep + added
    if not is_ready:
        old = next((t for t in taints if _not_ready_noschedule(t)), None)
        new.append(old if old is not None else {**NOT_READY_TAINT, "timeAdded": now()})
    changed_annotations: dict[str, str | None] = {}
    if new_annotation != previous:
        changed_annotations[PLUGIN_TAINTS_ANNOTATION] = new_annotation or None
    if ping_raw is not None and annotations.get(PING_ANNOTATION) != ping_raw:
        changed_annotations[PING_ANNOTATION] = ping_raw
    if _taint_set(new) == _taint_set(taints) and not changed_annotations:
        return None
    patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
    if changed_annotations:
        patch["metadata"]["annotations"] = changed_annotations
    if _taint_set(new) != _taint_set(taints):
        patch["spec"] = {"taints": new}
    return patch


def _not_ready_noschedule(t: dict[str, Any]) -> bool:
    return t.get("key") == NOT_READY_TAINT["key"] and t.get("effect") == NOT_READY_TAINT["effect"]


def _taint_set(taints: list[dict[str, Any]]) -> set[tuple[Any, Any, Any]]:
    return {(t.get("key"), t.get("value"), t.get("effect")) for t in taints}
