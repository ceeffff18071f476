"""Live availability: free units per accelerator, as the scheduler would see them.

free = the sum over the accelerator's nodes (nodes matching its node selector that advertise its resource) of
node allocatable - the requests of the non-terminated pods bound to that node. The numbers come from the
Kubernetes API and are cached for a few seconds: the spawn form may be opened by many users at once, and a
slightly stale count is fine for a hint (the quota check and the scheduler are what actually decide).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aifacility.facility.model import Facility
from aifacility.facility.quantity import parse_quantity

# accelerator name -> (free units, total units)
Availability = dict[str, tuple[int, int]]


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)  # type: ignore[assignment]
    return obj


def _pod_requests(pod: Mapping[str, Any], resource: str) -> int:
    """What a pod asks of `resource`, as the scheduler counts it (containers summed; init containers max)."""
    spec = pod.get("spec") or {}

    def amount(c: Mapping[str, Any]) -> int:
        res = c.get("resources") or {}
        value = (res.get("requests") or {}).get(resource, (res.get("limits") or {}).get(resource))
        return int(parse_quantity(value)) if value is not None else 0

    containers = sum(amount(c) for c in spec.get("containers") or [])
    inits = max((amount(c) for c in spec.get("initContainers") or []), default=0)
    return max(containers, inits)


def compute_availability(facility: Facility, nodes: Iterable[Mapping[str, Any]],
                         pods: Iterable[Mapping[str, Any]]) -> Availability:
    """Free and total units of every accelerator from node and pod objects (Kubernetes JSON shapes)."""
    nodes = list(nodes)
    resources = {a.resource for a in facility.accelerators}
    used: dict[tuple[str, str], int] = {}
    for pod in pods:
        if _get(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        node = _get(pod, "spec", "nodeName")
        if not node:
            continue  # pending pods hold nothing yet
        for resource in resources:  # distinct: several models may share nvidia.com/gpu
            n = _pod_requests(pod, resource)
            if n:
                used[(node, resource)] = used.get((node, resource), 0) + n
    out: Availability = {}
    for acc in facility.accelerators:
        free = total = 0
        for node in nodes:
            labels = _get(node, "metadata", "labels") or {}
            if any(labels.get(k) != v for k, v in acc.node_selector.items()):
                continue
            if _get(node, "spec", "unschedulable"):
                continue
            alloc = (_get(node, "status", "allocatable") or {}).get(acc.resource)
            if alloc is None:
                continue
            units = int(parse_quantity(alloc))
            total += units
            free += max(0, units - used.get((_get(node, "metadata", "name"), acc.resource), 0))
        out[acc.name] = (free, total)
    return out


Fetch = Callable[[], Awaitable[tuple[list[dict[str, Any]], list[dict[str, Any]]]]]


class AvailabilityCache:
    """Caches `compute_availability` over a fetch of (nodes, pods) for `ttl` seconds; one fetch at a time."""

    def __init__(self, facility: Facility, ttl: float = 5.0) -> None:
        self.facility = facility
        self.ttl = ttl
        self._value: Availability | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, fetch: Fetch) -> Availability:
        """The cached figures, or new ones from `fetch` (the caller's client) when they are older than ttl."""
        if self._value is not None and time.monotonic() - self._at < self.ttl:
            return self._value
        async with self._lock:  # many forms opening at once cause one API round trip, not many
            if self._value is not None and time.monotonic() - self._at < self.ttl:
                return self._value
            nodes, pods = await fetch()
            self._value = compute_availability(self.facility, nodes, pods)
            self._at = time.monotonic()
            return self._value


async def fetch_from_api(core_v1: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List nodes and non-terminated pods with a kubernetes_asyncio CoreV1Api, as plain JSON dicts."""
    api_client = core_v1.api_client
    nodes = await core_v1.list_node(_request_timeout=10)
    pods = await core_v1.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed", _request_timeout=10)
    return (api_client.sanitize_for_serialization(nodes).get("items", []),
            api_client.sanitize_for_serialization(pods).get("items", []))
