"""Flavor assignment: which ResourceFlavor each requested resource of a Workload gets in its ClusterQueue.

Kueue's rules (flavorassigner.go, cluster_queue.md "Flavors and Resources"), without preemption:
  * per podSet and resource group, walk the group's flavors in list order;
  * skip a flavor whose nodeLabels conflict with the pod's nodeSelector or required node affinity, and one
    whose NoSchedule/NoExecute nodeTaints the pod does not tolerate (the flavor's own tolerations count: it
    injects them on admission);
  * take the first flavor where everything fits without borrowing; else the first where it fits by borrowing
    (whenCanBorrow=MayStopSearch); else the workload stays pending with the reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aifacility.devcluster.kueue.quota import Cluster, Fit, FlavorResource, format_quantity
from aifacility.facility.quantity import parse_quantity


@dataclass
class PodSetAssignment:
    name: str
    count: int
    flavors: dict[str, str]  # resource -> flavor
    usage: dict[str, Decimal]  # resource -> total over the podSet

    def to_status(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "flavors": dict(self.flavors),
                "resourceUsage": {r: format_quantity(q) for r, q in self.usage.items()}}


@dataclass
class Assignment:
    podsets: list[PodSetAssignment] = field(default_factory=list)
    borrows: bool = False
    # Why it does not fit (empty when it does): shown in the Workload's QuotaReserved=False message.
    reasons: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.reasons

    def amounts(self) -> dict[FlavorResource, Decimal]:
        out: dict[FlavorResource, Decimal] = {}
        for ps in self.podsets:
            for r, q in ps.usage.items():
                fr = (ps.flavors[r], r)
                out[fr] = out.get(fr, Decimal(0)) + q
        return out


def pod_requests(spec: Mapping[str, Any]) -> dict[str, Decimal]:
    """The effective requests of one pod: containers summed, init containers as a floor, plus overhead.

    A container that sets only limits requests its limits (the API server defaults requests from limits).
    """
    def container(c: Mapping[str, Any]) -> dict[str, Decimal]:
        res = c.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {k: parse_quantity(v) for k, v in merged.items()}

    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for k, v in container(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    for c in spec.get("initContainers") or []:
        for k, v in container(c).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, Decimal(0)) + parse_quantity(v)
    return {k: v for k, v in total.items() if v > 0}


def _expression_ok(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if key not in labels:
        return True  # the flavor says nothing about this key: no conflict
    value = labels[key]
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return True
    if op == "DoesNotExist":
        return False
    if op in ("Gt", "Lt"):
        try:
            n, limit = int(value), int(values[0])
        except (ValueError, IndexError):
            return False
        return n > limit if op == "Gt" else n < limit
    return False


def selector_conflict(spec: Mapping[str, Any], node_labels: Mapping[str, str]) -> str | None:
    """Why a pod's nodeSelector / required node affinity rules out a flavor's nodeLabels (None: no conflict)."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if key in node_labels and node_labels[key] != value:
            return f"nodeSelector {key}={value} conflicts with the flavor's {key}={node_labels[key]}"
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(all(_expression_ok(e, node_labels) for e in t.get("matchExpressions") or [])
                         for t in terms):
        return "required node affinity does not match the flavor's nodeLabels"
    return None


def tolerates(tolerations: list[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if not t.get("key"):
            if t.get("operator") == "Exists":
                return True
            continue
        if t.get("key") != taint.get("key"):
            continue
        if t.get("operator") == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def untolerated_taint(spec: Mapping[str, Any], flavor: Mapping[str, Any]) -> str | None:
    fspec = flavor.get("spec") or {}
    tolerations = [*(spec.get("tolerations") or []), *(fspec.get("tolerations") or [])]
    for taint in fspec.get("nodeTaints") or []:
        if taint.get("effect") == "PreferNoSchedule":
            continue  # Kueue evaluates only NoSchedule and NoExecute
        if not tolerates(tolerations, taint):
            return f"untolerated taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
    return None


def assign(workload: Mapping[str, Any], queue: str, cluster: Cluster,
           flavors: Mapping[str, Mapping[str, Any]]) -> Assignment:
    """Assign flavors to every podSet of `workload` in ClusterQueue `queue` given the current usage.

    `flavors` maps ResourceFlavor names to the objects that exist. Usage of earlier podSets counts for later
    ones. The cluster's usage is not changed.
    """
    cq = cluster.queues[queue]
    out = Assignment()
    added: dict[FlavorResource, Decimal] = {}  # what earlier podSets of this workload take; undone below
    try:
        for ps in (workload.get("spec") or {}).get("podSets") or []:
            count = int(ps.get("count", 1))
            spec = (ps.get("template") or {}).get("spec") or {}
            per_pod = pod_requests(spec)
            total = {r: q * count for r, q in per_pod.items()}
            if "pods" in [r for g in cq.groups for r in g.covered]:
                total["pods"] = Decimal(count)
            assignment = PodSetAssignment(ps.get("name", "main"), count, {}, total)
            for resource in total:
                if cq.group_of(resource) is None:
                    out.reasons.append(f"resource {resource} unavailable in ClusterQueue {queue}")
            if out.reasons:
                return out
            done: set[str] = set()
            for resource in total:
                group = cq.group_of(resource)
                if group is None or resource in done:
                    continue
                wanted = [r for r in group.covered if r in total]
                done.update(wanted)
                choice: tuple[str, Fit] | None = None
                why: list[str] = []
                for fq in group.flavors:
                    flavor = flavors.get(fq.name)
                    if flavor is None:
                        why.append(f"flavor {fq.name} not found")
                        continue
                    problem = (selector_conflict(spec, (flavor.get("spec") or {}).get("nodeLabels") or {})
                               or untolerated_taint(spec, flavor))
                    if problem:
                        why.append(f"flavor {fq.name}: {problem}")
                        continue
                    worst = Fit.FIT
                    for r in wanted:
                        fit = cluster.fit(queue, (fq.name, r), total[r])
                        if fit == Fit.NO_FIT:
                            why.append(f"insufficient unused quota for {r} in flavor {fq.name}, "
                                       f"{format_quantity(total[r])} more needed")
                        worst = max(worst, fit)
                    if worst == Fit.FIT:
                        choice = (fq.name, worst)
                        break
                    if worst == Fit.BORROW and choice is None:
                        choice = (fq.name, worst)
                        break  # whenCanBorrow: MayStopSearch
                if choice is None:
                    out.reasons.append("; ".join(why) or f"no flavor of ClusterQueue {queue} covers {resource}")
                    return out
                name, fit = choice
                out.borrows = out.borrows or fit == Fit.BORROW
                for r in wanted:
                    assignment.flavors[r] = name
                    fr = (name, r)
                    # Later podSets see this one's usage, as Kueue's assigner accumulates it.
                    cluster.usage.add(queue, {fr: total[r]})
                    added[fr] = added.get(fr, Decimal(0)) + total[r]
            out.podsets.append(assignment)
        return out
    finally:
        cluster.usage.add(queue, {fr: -a for fr, a in added.items()})
