"""Render the facility's Kueue objects (v1beta2) from the facility file.

One ResourceFlavor per accelerator (its node selector as `nodeLabels`, its tolerations injected on admission),
a CPU flavor without labels, one flavor per interLink offload target (the virtual node by hostname, with the
interLink taint), one ClusterQueue per group in one cohort, one LocalQueue per group in the facility namespace.
Every ClusterQueue lists every flavor (nominal quota 0 where the group has none) because a queue can only
borrow a flavor it lists itself.
"""

from __future__ import annotations

from typing import Any

from aifacility.facility.model import Facility, Node, Toleration
from aifacility.facility.queues import INTERLINK_TAINT, LOCAL_SITE, SITE_LABEL, GroupQueue, Queues

API_VERSION = "kueue.x-k8s.io/v1beta2"
CPU_RESOURCES = ("cpu", "memory")
# Marks the objects this renderer owns, so that an operator can prune what the facility file no longer lists.
MANAGED_BY = {"app.kubernetes.io/managed-by": "aifacility"}
# Which facility (named by its namespace, unique in a cluster) an object belongs to: flavors and ClusterQueues are
# cluster-wide, and the installer refuses to overwrite another facility's (ansible/roles/aifacility).
FACILITY_LABEL = "aifacility.io/facility"


def _toleration(t: Toleration) -> dict[str, Any]:
    return {k: v for k, v in t.model_dump().items() if v is not None}


def _flavor(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "ResourceFlavor",
            "metadata": {"name": name, "labels": dict(MANAGED_BY)}, "spec": spec}


def _virtual_node_taint_value(node: Node) -> str:
    for taint in node.taints:
        if taint.key == INTERLINK_TAINT:
            return taint.value
    return "true"


def flavors(facility: Facility) -> list[dict[str, Any]]:
    q = facility.queues
    nodes = {n.name: n for n in facility.nodes}
    # With offload targets, the CPU flavor is the local site's, so that a job selecting a site skips it.
    out = [_flavor(q.cpu_flavor, {"nodeLabels": {SITE_LABEL: LOCAL_SITE}} if q.offload else {})]
    for t in q.offload:
        spec: dict[str, Any] = {
            "nodeLabels": {"kubernetes.io/hostname": t.node, SITE_LABEL: t.name},
            "nodeTaints": [{"key": INTERLINK_TAINT, "value": _virtual_node_taint_value(nodes[t.node]),
                            "effect": "NoSchedule"}],
        }
        if t.spill:
            spec["tolerations"] = [{"key": INTERLINK_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
        out.append(_flavor(t.name, spec))
    for a in facility.accelerators:
        spec = {}
        if a.node_selector:
            spec["nodeLabels"] = dict(a.node_selector)
        if a.tolerations:
            spec["tolerations"] = [_toleration(t) for t in a.tolerations]
        out.append(_flavor(a.name, spec))
    return out


def group_accelerators(facility: Facility, group: str) -> dict[str, int]:
    """The group's nominal accelerator quota: `queues.groups.<g>.accelerators`, else its `quotas:` limits."""
    gq = facility.queues.groups.get(group)
    if gq is not None and gq.accelerators is not None:
        return dict(gq.accelerators)
    limits = facility.quotas.groups.get(group)
    return dict(limits.accelerators) if limits else {}


def _quota(nominal: str, limit_key: str, gq: GroupQueue) -> dict[str, Any]:
    out: dict[str, Any] = {"nominalQuota": nominal}
    if not gq.borrowing:
        out["borrowingLimit"] = "0"
    elif limit_key in gq.borrowing_limit:
        out["borrowingLimit"] = gq.borrowing_limit[limit_key]
    return out


def _resource_groups(facility: Facility, group: str, gq: GroupQueue) -> list[dict[str, Any]]:
    q: Queues = facility.queues
    cpu_flavors = [{"name": q.cpu_flavor, "resources": [
        {"name": r, **_quota(getattr(gq, r), r, gq)} for r in CPU_RESOURCES]}]
    for t in q.offload:
        oq = gq.offload.get(t.name)
        cpu_flavors.append({"name": t.name, "resources": [
            {"name": r, **_quota(getattr(oq, r) if oq else "0", r, gq)} for r in CPU_RESOURCES]})
    groups = [{"coveredResources": list(CPU_RESOURCES), "flavors": cpu_flavors}]
    # Accelerators advertised under one resource name (two GPU models both as nvidia.com/gpu) must share a
    # resource group: Kueue lets a resource belong to one group only, and picks among its flavors in order.
    quota = group_accelerators(facility, group)
    # The events queue holds what an event reserved: it neither lends those devices to the cohort nor borrows more.
    held = {"borrowingLimit": "0", "lendingLimit": "0"} if group == facility.events.queue else {}
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for a in facility.accelerators:
        by_resource.setdefault(a.resource, []).append(
            {"name": a.name, "resources": [{"name": a.resource, **_quota(str(quota.get(a.name, 0)), a.name, gq),
                                            **held}]})
    for resource, fl in by_resource.items():
        groups.append({"coveredResources": [resource], "flavors": fl})
    return groups


def cluster_queue(facility: Facility, group: str) -> dict[str, Any]:
    q = facility.queues
    gq = q.groups[group]
    return {
        "apiVersion": API_VERSION, "kind": "ClusterQueue",
        "metadata": {"name": group, "labels": {**MANAGED_BY, "aifacility.io/group": group}},
        "spec": {
            "cohortName": q.cohort,
            # Only the facility's namespace: the well-known label the API server puts on every namespace.
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": facility.namespace}},
            "queueingStrategy": q.queueing_strategy,
            "resourceGroups": _resource_groups(facility, group, gq),
        },
    }


def local_queue(facility: Facility, group: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "LocalQueue",
        "metadata": {"name": group, "namespace": facility.namespace,
                     "labels": {**MANAGED_BY, "aifacility.io/group": group}},
        "spec": {"clusterQueue": group},
    }


# Interactive sessions first, then Dask workers (a person waits on them), then batch jobs. The label
# `kueue.x-k8s.io/priority-class: <name>` on a job or pod picks one; within a queue, higher values go first.
PRIORITIES = {"interactive": 1000, "dask": 500, "batch": 100}


def priority_classes() -> list[dict[str, Any]]:
    return [{"apiVersion": API_VERSION, "kind": "WorkloadPriorityClass",
             "metadata": {"name": name, "labels": dict(MANAGED_BY)}, "value": value,
             "description": f"aifacility {name} work"} for name, value in PRIORITIES.items()]


def render(facility: Facility) -> list[dict[str, Any]]:
    """The facility's Kueue objects, in the order to apply them (priority classes, flavors, ClusterQueues,
    LocalQueues)."""
    if not facility.queues.enabled:
        return []
    groups = list(facility.queues.groups)
    objects = [*priority_classes(), *flavors(facility), *(cluster_queue(facility, g) for g in groups),
               *(local_queue(facility, g) for g in groups)]
    for obj in objects:
        obj["metadata"]["labels"][FACILITY_LABEL] = facility.namespace
    return objects
