"""Quota arithmetic and flavor assignment, without a cluster (Kueue's documented worked examples)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from aifacility.devcluster.kueue.assign import assign, pod_requests
from aifacility.devcluster.kueue.quota import Cluster, Fit, QueueSpec, Usage, format_quantity

D = Decimal


def cq(name: str, nominal: str, *, cohort: str | None = "c", borrowing: str | None = None,
       lending: str | None = None, flavor: str = "f") -> QueueSpec:
    res: dict[str, Any] = {"name": "cpu", "nominalQuota": nominal}
    if borrowing is not None:
        res["borrowingLimit"] = borrowing
    if lending is not None:
        res["lendingLimit"] = lending
    return QueueSpec.from_object({"metadata": {"name": name}, "spec": {
        "cohortName": cohort, "resourceGroups": [{"coveredResources": ["cpu"],
                                                  "flavors": [{"name": flavor, "resources": [res]}]}]}})


def most(cluster: Cluster, queue: str) -> int:
    """The largest whole CPU count `queue` can reserve on top of its current usage."""
    n = 0
    while cluster.fit(queue, ("f", "cpu"), D(n + 1)) != Fit.NO_FIT:
        n += 1
    return n


def test_cohort_borrowing_limits_from_kueue_docs() -> None:
    # cluster_queue.md: CQ-a 9 CPU with borrowingLimit 1, CQ-b 12 CPU: a can use 10, b 21.
    cluster = Cluster([cq("a", "9", borrowing="1"), cq("b", "12")])
    assert most(cluster, "a") == 10
    assert most(cluster, "b") == 21
    assert cluster.fit("a", ("f", "cpu"), D(9)) == Fit.FIT
    assert cluster.fit("a", ("f", "cpu"), D(10)) == Fit.BORROW
    cluster.usage.add("b", {("f", "cpu"): D(15)})  # b borrows 3 of a's 9: a has 6 left
    assert most(cluster, "a") == 6


def test_lending_limit_keeps_a_floor() -> None:
    # With b's lendingLimit 1, b keeps 11 for itself: a still tops out at 10, and only when b uses <= 11.
    cluster = Cluster([cq("a", "9", borrowing="1"), cq("b", "12", lending="1")])
    cluster.usage.add("b", {("f", "cpu"): D(11)})
    assert most(cluster, "a") == 10
    cluster = Cluster([cq("a", "9"), cq("b", "12", lending="1")])
    assert most(cluster, "a") == 10  # 9 own + the 1 b lends
    cluster.usage.add("a", {("f", "cpu"): D(9)})
    assert most(cluster, "b") == 12  # its own 12: the pool has only the 1 unit b lends itself


def test_without_a_cohort_only_nominal_quota_counts() -> None:
    cluster = Cluster([cq("solo", "2", cohort=None)], Usage())
    assert most(cluster, "solo") == 2
    assert cluster.fit("solo", ("other", "cpu"), D(1)) == Fit.NO_FIT


@pytest.mark.parametrize(("value", "text"), [
    (D(2), "2"), (D("0.5"), "500m"), (D(4 * 2**30), "4Gi"), (D(1000), "1000"), (D(0), "0"), (D(3 * 2**20), "3Mi"),
])
def test_format_quantity(value: Decimal, text: str) -> None:
    assert format_quantity(value) == text


def test_pod_requests_limits_init_containers_and_overhead() -> None:
    spec = {"containers": [{"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
                           {"resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "4"}}}],
            "overhead": {"memory": "64Mi"}}
    assert pod_requests(spec) == {"cpu": D(4), "memory": D(2**30 + 64 * 2**20)}


def workload(cpu: str, count: int = 1, **spec: Any) -> dict[str, Any]:
    return {"spec": {"podSets": [{"name": "main", "count": count, "template": {"spec": {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}], **spec}}}]}}


def two_flavor_cluster(*, cohort: str | None = None) -> tuple[Cluster, dict[str, dict[str, Any]]]:
    spec = QueueSpec.from_object({"metadata": {"name": "q"}, "spec": {"cohortName": cohort, "resourceGroups": [
        {"coveredResources": ["cpu"], "flavors": [
            {"name": "local", "resources": [{"name": "cpu", "nominalQuota": "2"}]},
            {"name": "remote", "resources": [{"name": "cpu", "nominalQuota": "8"}]}]}]}})
    flavors = {"local": {"spec": {"nodeLabels": {"site": "local"}}},
               "remote": {"spec": {"nodeLabels": {"site": "remote"},
                                   "nodeTaints": [{"key": "vk", "value": "true", "effect": "NoSchedule"}]}}}
    return Cluster([spec]), flavors


def test_flavors_in_order_and_taints_opt_in() -> None:
    cluster, flavors = two_flavor_cluster()
    first = assign(workload("2"), "q", cluster, flavors)
    assert first.fits and first.podsets[0].flavors == {"cpu": "local"}
    cluster.usage.add("q", first.amounts())
    # local is full; remote is tainted and this pod does not tolerate it.
    blocked = assign(workload("1"), "q", cluster, flavors)
    assert not blocked.fits
    assert "insufficient unused quota for cpu in flavor local" in blocked.reasons[0]
    assert "untolerated taint vk=true:NoSchedule" in blocked.reasons[0]
    tolerant = assign(workload("1", tolerations=[{"key": "vk", "operator": "Exists"}]), "q", cluster, flavors)
    assert tolerant.fits and tolerant.podsets[0].flavors == {"cpu": "remote"}
    # The flavor's own tolerations make it "automatic": no opt-in needed.
    flavors["remote"]["spec"]["tolerations"] = [{"key": "vk", "operator": "Exists", "effect": "NoSchedule"}]
    assert assign(workload("1"), "q", cluster, flavors).podsets[0].flavors == {"cpu": "remote"}


def test_node_selector_skips_conflicting_flavors_and_counts_pods() -> None:
    cluster, flavors = two_flavor_cluster()
    wl = workload("1", count=3, nodeSelector={"site": "remote"},
                  tolerations=[{"key": "vk", "operator": "Exists"}])
    result = assign(wl, "q", cluster, flavors)
    assert result.podsets[0].flavors == {"cpu": "remote"}
    assert result.podsets[0].to_status() == {"name": "main", "count": 3, "flavors": {"cpu": "remote"},
                                             "resourceUsage": {"cpu": "3"}}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "site", "operator": "NotIn", "values": ["local"]}]}]}}}
    assert not assign(workload("1", affinity=affinity), "q", cluster, flavors).fits  # remote untolerated


def test_uncovered_resource_is_reported() -> None:
    cluster, flavors = two_flavor_cluster()
    wl = {"spec": {"podSets": [{"name": "main", "count": 1, "template": {"spec": {"containers": [
        {"name": "c", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]}}}]}}
    assert assign(wl, "q", cluster, flavors).reasons == ["resource nvidia.com/gpu unavailable in ClusterQueue q"]
    assert cluster.usage.of("q", ("local", "cpu")) == 0


def test_assignment_leaves_usage_as_it_was() -> None:
    cluster, flavors = two_flavor_cluster()
    cluster.usage.add("q", {("local", "cpu"): D(1)})
    wl = {"spec": {"podSets": [
        {"name": "a", "count": 1, "template": {"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}}},
        {"name": "b", "count": 1, "template": {"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}],
                                                         "tolerations": [{"operator": "Exists"}]}}}]}}
    result = assign(wl, "q", cluster, flavors)
    # The second podSet sees the first one's usage: local (2) is then full, so it goes remote.
    assert [ps.flavors["cpu"] for ps in result.podsets] == ["local", "remote"]
    assert cluster.usage.of("q", ("local", "cpu")) == 1
    assert cluster.usage.of("q", ("remote", "cpu")) == 0
