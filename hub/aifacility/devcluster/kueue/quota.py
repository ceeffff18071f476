"""Quota arithmetic of Kueue's ClusterQueues and flat cohorts, with exact Kubernetes quantities.

A ClusterQueue X has, per (flavor, resource), a nominal quota, an optional borrowingLimit and an optional
lendingLimit. X keeps `guaranteed = nominal - lendingLimit` (0 without a lendingLimit) for itself; the rest of
every member's nominal quota forms the cohort's pool. A request of `a` fits X when
  * X's usage after it stays within `nominal + borrowingLimit` (just `nominal` outside a cohort), and
  * in a cohort, what X then uses beyond its guaranteed part still fits the pool next to what the other
    members use beyond theirs.
It is "borrowing" when X's usage goes over its nominal quota. This reproduces the worked examples of Kueue's
cluster_queue.md (CQ-a 9 CPU with borrowingLimit 1, CQ-b 12 CPU: a tops out at 10, b at 21; with b's
lendingLimit 1, b keeps 11 for itself). Hierarchical cohorts (Cohort objects) are not emulated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum
from typing import Any

from aifacility.facility.quantity import parse_quantity

FlavorResource = tuple[str, str]  # (flavor name, resource name)


class Fit(IntEnum):
    """How a request fits a flavor; lower is better (Kueue's preference order without preemption)."""

    FIT = 0
    BORROW = 1
    NO_FIT = 2


@dataclass(frozen=True)
class ResourceQuota:
    nominal: Decimal
    borrowing_limit: Decimal | None = None  # None: unbounded (up to the cohort's unused quota)
    lending_limit: Decimal | None = None  # None: lends everything

    @property
    def guaranteed(self) -> Decimal:
        return self.nominal - self.lending_limit if self.lending_limit is not None else Decimal(0)


@dataclass(frozen=True)
class FlavorQuotas:
    name: str
    resources: Mapping[str, ResourceQuota]


@dataclass(frozen=True)
class ResourceGroup:
    covered: tuple[str, ...]
    flavors: tuple[FlavorQuotas, ...]


@dataclass(frozen=True)
class QueueSpec:
    """The parts of a ClusterQueue that admission needs."""

    name: str
    cohort: str | None
    strategy: str
    groups: tuple[ResourceGroup, ...]
    namespace_selector: Mapping[str, Any] | None

    @classmethod
    def from_object(cls, cq: Mapping[str, Any]) -> QueueSpec:
        spec = cq.get("spec") or {}
        groups = []
        for rg in spec.get("resourceGroups") or []:
            flavors = []
            for f in rg.get("flavors") or []:
                res = {}
                for r in f.get("resources") or []:
                    res[r["name"]] = ResourceQuota(
                        parse_quantity(r["nominalQuota"]),
                        parse_quantity(r["borrowingLimit"]) if r.get("borrowingLimit") is not None else None,
                        parse_quantity(r["lendingLimit"]) if r.get("lendingLimit") is not None else None,
                    )
                flavors.append(FlavorQuotas(f["name"], res))
            groups.append(ResourceGroup(tuple(rg.get("coveredResources") or ()), tuple(flavors)))
        return cls(cq["metadata"]["name"], spec.get("cohortName") or None,
                   spec.get("queueingStrategy") or "BestEffortFIFO", tuple(groups),
                   spec.get("namespaceSelector"))

    def group_of(self, resource: str) -> ResourceGroup | None:
        for g in self.groups:
            if resource in g.covered:
                return g
        return None

    def quota(self, flavor: str, resource: str) -> ResourceQuota | None:
        for g in self.groups:
            for f in g.flavors:
                if f.name == flavor:
                    return f.resources.get(resource)
        return None

    def flavor_names(self) -> list[str]:
        return [f.name for g in self.groups for f in g.flavors]


@dataclass
class Usage:
    """What each ClusterQueue has reserved, per (flavor, resource)."""

    by_queue: dict[str, dict[FlavorResource, Decimal]] = field(default_factory=dict)

    def of(self, queue: str, fr: FlavorResource) -> Decimal:
        return self.by_queue.get(queue, {}).get(fr, Decimal(0))

    def add(self, queue: str, amounts: Mapping[FlavorResource, Decimal]) -> None:
        q = self.by_queue.setdefault(queue, {})
        for fr, a in amounts.items():
            q[fr] = q.get(fr, Decimal(0)) + a


class Cluster:
    """ClusterQueues by name plus their usage: answers "does this request fit, and by borrowing?"."""

    def __init__(self, queues: Iterable[QueueSpec], usage: Usage | None = None) -> None:
        self.queues = {q.name: q for q in queues}
        self.usage = usage or Usage()

    def members(self, cohort: str) -> list[QueueSpec]:
        return [q for q in self.queues.values() if q.cohort == cohort]

    def fit(self, queue: str, fr: FlavorResource, amount: Decimal) -> Fit:
        q = self.queues[queue]
        quota = q.quota(*fr)
        if quota is None:
            return Fit.NO_FIT
        used = self.usage.of(queue, fr)
        new = used + amount
        if q.cohort is None:
            return Fit.FIT if new <= quota.nominal else Fit.NO_FIT
        if quota.borrowing_limit is not None and new > quota.nominal + quota.borrowing_limit:
            return Fit.NO_FIT
        pool = Decimal(0)
        pool_used = Decimal(0)
        for member in self.members(q.cohort):
            mq = member.quota(*fr)
            if mq is None:
                continue
            pool += mq.nominal - mq.guaranteed
            pool_used += max(Decimal(0), self.usage.of(member.name, fr) - mq.guaranteed)
        extra = max(Decimal(0), new - quota.guaranteed) - max(Decimal(0), used - quota.guaranteed)
        if pool_used + extra > pool:
            return Fit.NO_FIT
        return Fit.FIT if new <= quota.nominal else Fit.BORROW

    def borrowed(self, queue: str, fr: FlavorResource) -> Decimal:
        quota = self.queues[queue].quota(*fr)
        nominal = quota.nominal if quota else Decimal(0)
        return max(Decimal(0), self.usage.of(queue, fr) - nominal)


_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def format_quantity(value: Decimal) -> str:
    """A Kubernetes quantity string for an exact amount: "2", "500m", "4Gi", or plain bytes."""
    if value == value.to_integral_value():
        n = int(value)
        if n >= 2**20:  # a count of CPUs or devices never is; bytes usually are
            for suffix, size in _BINARY:
                if n % size == 0:
                    return f"{n // size}{suffix}"
        return str(n)
    millis = value * 1000
    if millis == millis.to_integral_value():
        return f"{int(millis)}m"
    return str(value.normalize())
