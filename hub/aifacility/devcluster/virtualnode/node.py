"""The virtual node's own status: the plugin ping, capacity from the PingResponse, Ready/InterlinkConnectivity.

Like interLink's virtual kubelet, the node starts NotReady and is Ready only while the plugin answers its
ping (`GET /status` with `[]`). While it is not Ready it carries the `node.kubernetes.io/not-ready:NoSchedule`
taint that Kubernetes' node lifecycle controller adds, so new pods stay Pending instead of being bound to a
node that cannot run them.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.events import now
from aifacility.devcluster.store import Store, StoreError
from aifacility.facility.quantity import parse_quantity
from aifacility_interlink.contract import PingResponse

log = logging.getLogger(__name__)

NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
CONNECTIVITY = "InterlinkConnectivity"
# Taints the virtual node owns; everything else on the node comes from the facility file or the plugin.
_PLUGIN_TAINTS_ANNOTATION = "interlink.virtual-kubelet.io/plugin-taints"
PING_ANNOTATION = "interlink.virtual-kubelet.io/ping-response"


def _cond(type_: str, status: str, reason: str, message: str, stamp: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}


def _set_conditions(node: dict[str, Any], new: list[dict[str, str]]) -> None:
    status = node.setdefault("status", {})
    conds = [c for c in status.get("conditions") or [] if c.get("type") not in {n["type"] for n in new}]
    old = {c.get("type"): c for c in status.get("conditions") or []}
    for c in new:
        prev = old.get(c["type"])
        if prev is not None and prev.get("status") == c["status"]:
            c["lastTransitionTime"] = prev.get("lastTransitionTime") or c["lastTransitionTime"]
    status["conditions"] = conds + new


def _set_taints(node: dict[str, Any], ready: bool, plugin_taints: list[dict[str, str]] | None) -> None:
    spec = node.setdefault("spec", {})
    meta = node["metadata"].setdefault("annotations", {})
    previous = meta.get(_PLUGIN_TAINTS_ANNOTATION, "")
    owned = {tuple(t.split(":", 1)) for t in previous.split(",") if t}
    taints = [t for t in spec.get("taints") or []
              if (t.get("key"), t.get("effect")) not in owned and t.get("key") != NOT_READY_TAINT["key"]]
    if plugin_taints is not None:
        have = {(t.get("key"), t.get("effect")) for t in taints}
        added = [t for t in plugin_taints if (t["key"], t["effect"]) not in have]
        taints += added
        meta[_PLUGIN_TAINTS_ANNOTATION] = ",".join(f"{t['key']}:{t['effect']}" for t in added)
    else:  # no fresh word from the plugin: keep what it said last
        taints += [t for t in (spec.get("taints") or []) if (t.get("key"), t.get("effect")) in owned]
    if not ready:
        taints.append({**NOT_READY_TAINT, "timeAdded": now()})
    spec["taints"] = taints


def mark_not_ready(store: Store, node_name: str, reason: str, message: str, *, taint: bool = True) -> None:
    """Ready=False and InterlinkConnectivity=False with `message`, plus (unless `taint` is False) the not-ready
    taint."""
    stamp = now()

    def apply(node: dict[str, Any]) -> None:
        _set_conditions(node, [_cond("Ready", "False", "KubeletNotReady", message, stamp),
                               _cond(CONNECTIVITY, "False", reason, message, stamp)])
        _set_taints(node, not taint, None)

    try:
        store.modify(kinds.NODE, None, node_name, apply)
    except StoreError as e:
        log.warning("node %s: status not written: %s", node_name, e)


def _positive(value: str | None, fallback: str) -> str:
    """A quantity from the ping, or the configured one when it is missing, unreadable or 0 (interLink #558)."""
    if not value:
        return fallback
    try:
        return value if parse_quantity(value) > Decimal(0) else fallback
    except (ValueError, ArithmeticError):
        return fallback


def mark_ready(store: Store, node_name: str, ping: PingResponse, configured: dict[str, str], raw: str) -> None:
    """Ready, with capacity and allocatable from the PingResponse (never a bare 0) and the plugin's taints."""
    stamp = now()

    def apply(node: dict[str, Any]) -> None:
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
        message = "the interLink plugin answers its ping"
        _set_conditions(node, [_cond("Ready", "True", "KubeletReady", "virtual kubelet is posting ready status",
                                     stamp),
                               _cond(CONNECTIVITY, "True", "InterlinkPingSuccessful", message, stamp)])
        node["metadata"].setdefault("annotations", {})[PING_ANNOTATION] = raw
        _set_taints(node, True, [t.model_dump() for t in ping.taints
                                 if t.key and t.key != "virtual-node.interlink/no-schedule"])

    try:
        store.modify(kinds.NODE, None, node_name, apply)
    except StoreError as e:
        log.warning("node %s: status not written: %s", node_name, e)
