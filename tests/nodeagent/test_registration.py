"""Node objects from the facility file, as the node agent registers them."""

from __future__ import annotations

from aifacility.embedded.nodeagent.registration import INTERLINK_TAINT, node_object
from aifacility.facility.model import Facility


def test_gpu_node(facility: Facility) -> None:
    i, node = next((i, n) for i, n in enumerate(facility.nodes) if n.name == "gpu-mixed-01")
    obj = node_object(facility, node, i, None)
    alloc = obj["status"]["allocatable"]
    assert alloc["nvidia.com/gpu"] == "2" and alloc["nvidia.com/gpu-a30"] == "1"
    assert alloc["cpu"] == "32" and alloc["memory"] == "192Gi" and alloc["pods"] == "110"
    assert "ephemeral-storage" in alloc
    labels = obj["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "gpu-mixed-01"
    assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"] == "amd64"
    assert labels["nvidia.com/gpu.product"] == "Quadro-RTX-5000"
    assert "node.kubernetes.io/instance-type" in labels
    assert obj["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert {"type": "InternalIP", "address": f"127.1.0.{i + 1}"} in obj["status"]["addresses"]
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_virtual_node(facility: Facility) -> None:
    i, node = next((i, n) for i, n in enumerate(facility.nodes) if n.interlink is not None)
    obj = node_object(facility, node, i, None)
    labels = obj["metadata"]["labels"]
    assert labels["virtual-node.interlink/type"] == "virtual-kubelet"
    assert labels["kubernetes.io/os"] == "virtual-kubelet"
    # NodeRestriction refuses a node's own kubernetes.io/ labels other than the well-known ones.
    assert "kubernetes.io/role" not in labels
    assert INTERLINK_TAINT in obj["spec"]["taints"]
    assert obj["status"]["allocatable"]["pods"] == "10000"
