"""Free units per accelerator from node allocatable minus the requests of non-terminated pods."""

from __future__ import annotations

from typing import Any

from aifacility.facility import Facility
from aifacility.spawner.availability import AvailabilityCache, compute_availability


def node(name: str, labels: dict[str, str], allocatable: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": allocatable}}


def pod(node_name: str | None, phase: str, requests: dict[str, str]) -> dict[str, Any]:
    return {"spec": {"nodeName": node_name, "containers": [{"resources": {"requests": requests,
                                                                          "limits": requests}}]},
            "status": {"phase": phase}}


NODES = [
    node("gpu-t4-01", {"nvidia.com/gpu.product": "Tesla-T4"}, {"nvidia.com/gpu": "4", "cpu": "32"}),
    node("gpu-mixed-01", {"nvidia.com/gpu.product": "Quadro-RTX-5000", "aifacility.io/gpu-a30": "true"},
         {"nvidia.com/gpu": "2", "nvidia.com/gpu-a30": "1"}),
    node("gpu-a100-01", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/mig.strategy": "mixed"},
         {"nvidia.com/mig-1g.10gb": "4", "nvidia.com/mig-3g.40gb": "2"}),
    node("cpu-01", {}, {"cpu": "16"}),
]


def test_free_units_per_accelerator(facility: Facility) -> None:
    pods = [
        pod("gpu-t4-01", "Running", {"nvidia.com/gpu": "1"}),
        pod("gpu-t4-01", "Pending", {"nvidia.com/gpu": "2"}),   # bound, starting: holds its devices
        pod("gpu-t4-01", "Succeeded", {"nvidia.com/gpu": "1"}),  # finished: holds nothing
        pod(None, "Pending", {"nvidia.com/gpu": "1"}),           # not scheduled (e.g. queued): holds nothing
        pod("gpu-mixed-01", "Running", {"nvidia.com/gpu": "1"}),
        pod("gpu-a100-01", "Running", {"nvidia.com/mig-1g.10gb": "1"}),
    ]
    free = compute_availability(facility, NODES, pods)
    # T4 and RTX 5000 share the resource name; the node selector tells them apart.
    assert free["t4"] == (1, 4)
    assert free["rtx5000"] == (1, 2)
    assert free["a30"] == (1, 1)
    assert free["mig-1g-10gb"] == (3, 4)
    assert free["mig-3g-40gb"] == (2, 2)
    assert free["alveo-v70"] == (0, 0)  # no FPGA node in this cluster


async def test_cache_reads_the_cluster_once_per_ttl(facility: Facility) -> None:
    calls = 0

    async def fetch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        nonlocal calls
        calls += 1
        return NODES, []

    cache = AvailabilityCache(facility, ttl=3600)
    assert (await cache.get(fetch))["t4"] == (4, 4)
    await cache.get(fetch)
    assert calls == 1
    cache.ttl = 0
    await cache.get(fetch)
    assert calls == 2
