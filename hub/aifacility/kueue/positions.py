"""Read queue positions from Kueue's visibility API (the real Kueue, on a cluster and in the embedded facility).

    positions = await local_queue_positions(api_client, "aifacility", "physics")
    mine = find_owner(positions, "Pod", "jupyter-alice")     # -> PendingWorkload | None
    mine.position_in_local_queue                               # 0 = next to be admitted

`api_client` is a `kubernetes_asyncio.client.ApiClient` (the hub's client). There is no official Python SDK for
Kueue; the visibility endpoints are plain GETs returning a `PendingWorkloadsSummary`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GROUP_VERSION = "visibility.kueue.x-k8s.io/v1beta2"
_LQ_PATH = "/apis/" + GROUP_VERSION + "/namespaces/{namespace}/localqueues/{name}/pendingworkloads"
_CQ_PATH = "/apis/" + GROUP_VERSION + "/clusterqueues/{name}/pendingworkloads"


@dataclass(frozen=True)
class PendingWorkload:
    name: str
    namespace: str
    local_queue: str
    priority: int
    position_in_cluster_queue: int
    position_in_local_queue: int
    owner_kind: str | None
    owner_name: str | None
    created: str | None


def parse_summary(body: Mapping[str, Any]) -> list[PendingWorkload]:
    """The items of a PendingWorkloadsSummary; ValueError when the body is not one."""
    if body.get("kind") != "PendingWorkloadsSummary":
        raise ValueError(f"expected a PendingWorkloadsSummary, got {body.get('kind')!r}")
    out = []
    for item in body.get("items") or []:
        meta = item.get("metadata") or {}
        # Kueue's visibility API copies a Workload's owner references without their `controller` flag: the
        # controller's reference when it is marked, else the first (a Workload has its job as only owner).
        refs = meta.get("ownerReferences") or []
        owner = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
        out.append(PendingWorkload(
            name=meta.get("name", ""), namespace=meta.get("namespace", ""),
            local_queue=item.get("localQueueName", ""), priority=int(item.get("priority") or 0),
            position_in_cluster_queue=int(item.get("positionInClusterQueue", 0)),
            position_in_local_queue=int(item.get("positionInLocalQueue", 0)),
            owner_kind=owner.get("kind") if owner else None, owner_name=owner.get("name") if owner else None,
            created=meta.get("creationTimestamp")))
    return out


def find_owner(items: Iterable[PendingWorkload], kind: str, name: str) -> PendingWorkload | None:
    """The pending workload of a Pod or Job (by its owner reference), if it is still waiting."""
    return next((p for p in items if p.owner_kind == kind and p.owner_name == name), None)


async def _get(api_client: Any, path: str, params: dict[str, str], limit: int, offset: int) -> list[PendingWorkload]:
    body = await api_client.call_api(
        path, "GET", path_params=params, query_params=[("limit", limit), ("offset", offset)],
        header_params={"Accept": "application/json"}, response_types_map={200: "object"},
        auth_settings=["BearerToken"], _return_http_data_only=True)
    return parse_summary(body)


async def local_queue_positions(api_client: Any, namespace: str, local_queue: str, *, limit: int = 1000,
                                offset: int = 0) -> list[PendingWorkload]:
    return await _get(api_client, _LQ_PATH, {"namespace": namespace, "name": local_queue}, limit, offset)


async def cluster_queue_positions(api_client: Any, cluster_queue: str, *, limit: int = 1000,
                                  offset: int = 0) -> list[PendingWorkload]:
    return await _get(api_client, _CQ_PATH, {"name": cluster_queue}, limit, offset)
