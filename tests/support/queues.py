"""Reading a Kueue ClusterQueue's quotas in tests and benchmarks."""

from __future__ import annotations

from typing import Any


def nominal_quota(cluster_queue: dict[str, Any], flavor: str) -> str:
    """The nominal quota of the accelerator flavor `flavor` (a GPU, MIG or FPGA flavor: one resource each)."""
    for rg in cluster_queue["spec"]["resourceGroups"]:
        if rg["coveredResources"][0] in ("cpu", "memory"):
            continue
        for f in rg["flavors"]:
            if f["name"] == flavor:
                return str(f["resources"][0]["nominalQuota"])
    raise KeyError(f"ClusterQueue {cluster_queue['metadata']['name']} has no accelerator flavor {flavor!r}")
