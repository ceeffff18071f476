"""Kueue objects are validated like the real API server does (CRD schema + CEL), and what the development
cluster's Kueue does not emulate is refused with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from kueue_helpers import NS, cluster_queue, pod

from aifacility.devcluster.kinds import CLUSTERQUEUE, COHORT, LOCALQUEUE, POD, RESOURCEFLAVOR, WORKLOAD
from aifacility.devcluster.store import Invalid, Store


def refused(store: Store, kind: Any, obj: dict[str, Any]) -> str:
    with pytest.raises(Invalid) as err:
        store.create(kind, obj)
    assert err.value.code == 422
    return err.value.message


@pytest.mark.parametrize(("extra", "field"), [
    ({"admissionChecksStrategy": {"admissionChecks": [{"name": "prov"}]}}, "admissionChecksStrategy"),
    ({"preemption": {"reclaimWithinCohort": "Any"}}, "preemption"),
    ({"fairSharing": {"weight": "2"}}, "fairSharing"),
    ({"stopPolicy": "Hold"}, "stopPolicy"),
    ({"flavorFungibility": {"whenCanBorrow": "TryNextFlavor"}}, "flavorFungibility"),
])
def test_unsupported_cluster_queue_features_are_refused(store: Store, extra: dict[str, Any], field: str) -> None:
    message = refused(store, CLUSTERQUEUE, cluster_queue("cq", {"f": "1"}, **extra))
    assert f"spec.{field}: Forbidden: the development cluster's Kueue does not emulate {field}" in message


def test_defaults_are_filled_and_accepted(store: Store) -> None:
    created = store.create(CLUSTERQUEUE, cluster_queue("cq", {"f": "1"}, preemption={"withinClusterQueue": "Never"}))
    assert created["spec"]["queueingStrategy"] == "BestEffortFIFO"
    assert created["spec"]["flavorFungibility"] == {"whenCanBorrow": "MayStopSearch", "whenCanPreempt": "TryNextFlavor"}


def test_schema_and_cel_errors_name_the_field(store: Store) -> None:
    bad = cluster_queue("cq", {"f": "lots"})
    assert "spec.resourceGroups[0].flavors[0].resources[0].nominalQuota: Invalid value: \"lots\": must be a " \
           "quantity" in refused(store, CLUSTERQUEUE, bad)
    # CEL: a borrowingLimit needs a cohort.
    assert "borrowingLimit must be nil when cohort is empty" in refused(
        store, CLUSTERQUEUE, cluster_queue("cq", {"f": "1"}, borrowing_limit="1"))
    bad = cluster_queue("cq", {"f": "1"})
    bad["spec"]["resourceGroups"][0]["coveredResources"].append("memory")
    assert "flavors must have the same number of resources as the coveredResources" in refused(
        store, CLUSTERQUEUE, bad)
    assert "Unsupported value: \"Sometimes\"" in refused(
        store, CLUSTERQUEUE, cluster_queue("cq", {"f": "1"}, queueingStrategy="Sometimes"))
    taint = {"metadata": {"name": "f"}, "spec": {"tolerations": [{"operator": "Exists", "value": "x"}]}}
    assert "a value must be empty when 'operator' is 'Exists'" in refused(store, RESOURCEFLAVOR, taint)


def test_local_queue_cluster_queue_is_immutable(store: Store) -> None:
    lq = store.create(LOCALQUEUE, {"metadata": {"name": "lq", "namespace": NS}, "spec": {"clusterQueue": "a"}})
    lq["spec"]["clusterQueue"] = "b"
    with pytest.raises(Invalid, match=r"spec.clusterQueue: Invalid value: field is immutable"):
        store.update(LOCALQUEUE, lq)


def test_unknown_fields_are_pruned(store: Store) -> None:
    obj = cluster_queue("cq", {"f": "1"})
    obj["spec"]["nominalQouta"] = "typo"
    assert "nominalQouta" not in store.create(CLUSTERQUEUE, obj)["spec"]


def test_other_unsupported_features(store: Store) -> None:
    assert "does not emulate Cohort objects" in refused(store, COHORT, {"metadata": {"name": "lab"}, "spec": {}})
    assert "does not emulate topologyName" in refused(
        store, RESOURCEFLAVOR, {"metadata": {"name": "f"}, "spec": {"nodeLabels": {"a": "b"}, "topologyName": "t"}})
    grouped = pod("member")
    grouped["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] = "g"
    assert "does not emulate kueue.x-k8s.io/pod-group-name" in refused(store, POD, grouped)
    wl = {"metadata": {"name": "w", "namespace": NS}, "spec": {"queueName": "lq", "podSets": [
        {"name": "main", "count": 2, "minCount": 1, "template": {"spec": {"containers": [
            {"name": "c", "image": "x"}]}}}]}}
    assert "spec.podSets[0].minCount: Forbidden: the development cluster's Kueue does not emulate partial " \
           "admission" in refused(store, WORKLOAD, wl)
