"""Scheduling decisions (pure functions): requests, taints, affinity, fit, messages, the chosen node."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aifacility.devcluster.nodes import node_object
from aifacility.devcluster.scheduler import (
    choose_node,
    matches_node_selector,
    node_states,
    pod_requests,
    tolerates,
)
from aifacility.facility.model import Facility

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod(name: str = "p", *, limits: dict[str, str] | None = None, requests: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None, node: str | None = None, **spec: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    body: dict[str, Any] = {"containers": [{"name": "c", "command": ["true"], "resources": resources}], **spec}
    if tolerations:
        body["tolerations"] = tolerations
    if node:
        body["nodeName"] = node
    return {"metadata": {"name": name, "namespace": "ns", "uid": name}, "spec": body,
            "status": {"phase": "Running" if node else "Pending"}}


def nodes(facility: Facility) -> list[dict[str, Any]]:
    return [node_object(facility, n, i, None) for i, n in enumerate(facility.nodes)]


def test_limits_stand_for_absent_requests_and_init_containers_take_the_max() -> None:
    p = pod(limits={"cpu": "2", "nvidia.com/gpu": "1"}, requests={"cpu": "500m"})
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}]
    p["spec"]["containers"].append({"name": "d", "resources": {"requests": {"memory": "2Gi"}}})
    assert pod_requests(p) == {"cpu": Decimal(3), "memory": Decimal(2 * 2**30), "nvidia.com/gpu": Decimal(1)}


def test_sidecar_init_containers_add_to_the_containers() -> None:
    p = pod(requests={"cpu": "1"})
    p["spec"]["initContainers"] = [{"name": "side", "restartPolicy": "Always",
                                    "resources": {"requests": {"cpu": "1"}}}]
    assert pod_requests(p)["cpu"] == Decimal(2)


def test_tolerations() -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert tolerates(taint, [GPU_TOLERATION])
    assert tolerates(taint, [{"operator": "Exists"}])  # empty key + Exists tolerates everything
    assert tolerates(taint, [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}])
    assert not tolerates(taint, [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}])
    assert not tolerates(taint, [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}])
    assert not tolerates(taint, [])


def test_node_affinity_operators(facility: Facility) -> None:
    a100 = next(n for n in nodes(facility) if n["metadata"]["name"] == "gpu-a100-01")

    def with_terms(*terms: dict[str, Any]) -> dict[str, Any]:
        return pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": list(terms)}}})

    def expr(key: str, op: str, *values: str) -> dict[str, Any]:
        e: dict[str, Any] = {"key": key, "operator": op}
        if values:
            e["values"] = list(values)
        return {"matchExpressions": [e]}

    assert matches_node_selector(with_terms(expr("nvidia.com/mig.strategy", "In", "mixed")), a100)
    assert not matches_node_selector(with_terms(expr("nvidia.com/mig.strategy", "NotIn", "mixed")), a100)
    assert matches_node_selector(with_terms(expr("nvidia.com/gpu.count", "Gt", "1")), a100)
    assert not matches_node_selector(with_terms(expr("nvidia.com/gpu.count", "Lt", "2")), a100)
    assert matches_node_selector(with_terms(expr("xilinx-fpga-type", "DoesNotExist")), a100)
    assert not matches_node_selector(with_terms(expr("xilinx-fpga-type", "Exists")), a100)
    # Terms are ORed; an empty term matches nothing.
    assert matches_node_selector(with_terms({}, expr("kubernetes.io/hostname", "In", "gpu-a100-01")), a100)
    assert not matches_node_selector(with_terms({}), a100)
    by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-a100-01"]}]}
    assert matches_node_selector(with_terms(by_name), a100)
    assert not matches_node_selector(pod(nodeSelector={"nvidia.com/gpu.product": "Tesla-T4"}), a100)


def test_mig_pod_needs_the_gpu_toleration(facility: Facility) -> None:
    states = node_states(nodes(facility), [])
    best, message = choose_node(pod(limits={"nvidia.com/mig-1g.10gb": "1"}), states)
    assert best is None
    assert message == (
        "0/8 nodes are available: 1 node(s) had untolerated taint {xilinx.com/fpga: present}, "
        "2 Insufficient nvidia.com/mig-1g.10gb, 2 node(s) had untolerated taint "
        "{virtual-node.interlink/no-schedule: true}, 3 node(s) had untolerated taint {nvidia.com/gpu: present}. "
        "preemption: 0/8 nodes are available: 2 No preemption victims found for incoming pod, "
        "6 Preemption is not helpful for scheduling.")
    best, _ = choose_node(pod(limits={"nvidia.com/mig-1g.10gb": "1"}, tolerations=[GPU_TOLERATION]), states)
    assert best is not None and best.name == "gpu-a100-01"


def test_full_node_gives_insufficient_and_selector_reasons(facility: Facility) -> None:
    running = [pod(f"r{i}", limits={"nvidia.com/mig-1g.10gb": "1"}, node="gpu-a100-01") for i in range(4)]
    # A finished pod no longer holds its slice.
    running.append({**pod("done", limits={"nvidia.com/mig-1g.10gb": "1"}, node="gpu-a100-01"),
                    "status": {"phase": "Succeeded"}})
    states = node_states(nodes(facility), running)
    p = pod(limits={"nvidia.com/mig-1g.10gb": "1"}, tolerations=[{"operator": "Exists"}],
            nodeSelector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
    best, message = choose_node(p, states)
    assert best is None
    assert message.startswith("0/8 nodes are available: 1 Insufficient nvidia.com/mig-1g.10gb, "
                              "7 node(s) didn't match Pod's node affinity/selector. ")


def test_least_allocated_then_name(facility: Facility) -> None:
    states = node_states(nodes(facility), [])
    first, _ = choose_node(pod(requests={"cpu": "1", "memory": "1Gi"}), states)
    # cpu-01 and cpu-02 tie on score with no GPU taint, so the name decides.
    assert first is not None and first.name == "cpu-01"
    first.add(pod_requests(pod(requests={"cpu": "8", "memory": "8Gi"})))
    second, _ = choose_node(pod(requests={"cpu": "1", "memory": "1Gi"}), states)
    assert second is not None and second.name == "cpu-02"


def test_unschedulable_node_and_pod_count(facility: Facility) -> None:
    objs = nodes(facility)
    for n in objs:
        if n["metadata"]["name"] == "cpu-01":
            n["spec"]["unschedulable"] = True
        if n["metadata"]["name"] == "cpu-02":
            n["status"]["allocatable"]["pods"] = "1"
    states = node_states(objs, [pod("x", node="cpu-02")])
    best, message = choose_node(pod(), states)
    assert best is None
    assert "1 node(s) were unschedulable" in message
    assert "1 Too many pods" in message


def _labelled(name: str, node: str | None = None, **labels: str) -> dict[str, Any]:
    p = pod(name, node=node)
    p["metadata"]["labels"] = labels
    return p


def _with_affinity(p: dict[str, Any], kind: str, labels: dict[str, str],
                   key: str = "kubernetes.io/hostname") -> dict[str, Any]:
    p["spec"]["affinity"] = {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": labels}, "topologyKey": key}]}}
    return p


def test_required_pod_anti_affinity_spreads_replicas(facility: Facility) -> None:
    placed: list[dict[str, Any]] = []
    names: list[str | None] = []
    for i in range(3):
        p = _with_affinity(_labelled(f"r{i}", app="dask"), "podAntiAffinity", {"app": "dask"})
        best, message = choose_node(p, node_states(nodes(facility), placed))
        if best is None:
            assert "2 node(s) didn't match pod anti-affinity rules" in message
            names.append(None)
            continue
        names.append(best.name)
        placed.append({**p, "spec": {**p["spec"], "nodeName": best.name}, "status": {"phase": "Running"}})
    assert names == ["cpu-01", "cpu-02", None]


def test_existing_pods_anti_affinity_and_pod_affinity(facility: Facility) -> None:
    lonely = _with_affinity(_labelled("lonely", node="cpu-01", app="db"), "podAntiAffinity", {"app": "web"})
    states = node_states(nodes(facility), [lonely])
    best, _ = choose_node(_labelled("web", app="web"), states)
    assert best is not None and best.name == "cpu-02"  # cpu-01's resident refuses web pods
    follower = _with_affinity(_labelled("follower"), "podAffinity", {"app": "db"})
    best, _ = choose_node(follower, states)
    assert best is not None and best.name == "cpu-01"
    nobody = _with_affinity(_labelled("x"), "podAffinity", {"app": "none"})
    best, message = choose_node(nobody, states)
    assert best is None and "node(s) didn't match pod affinity rules" in message
