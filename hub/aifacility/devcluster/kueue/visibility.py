"""Kueue's on-demand visibility API (visibility.kueue.x-k8s.io/v1beta2) as an API server extension.

    GET /apis/visibility.kueue.x-k8s.io/v1beta2/clusterqueues/<cq>/pendingworkloads
    GET /apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/<ns>/localqueues/<lq>/pendingworkloads

answer a `PendingWorkloadsSummary` whose items carry `positionInClusterQueue` / `positionInLocalQueue` (from 0),
in the admission loop's order; `limit` (default 1000) and `offset` (default 0) page through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from aifacility.devcluster.api import register_api_group
from aifacility.devcluster.kinds import CLUSTERQUEUE, LOCALQUEUE, WORKLOAD
from aifacility.devcluster.kueue import workloads as wls
from aifacility.devcluster.store import NotFound, Store, not_found

GROUP, VERSION = "visibility.kueue.x-k8s.io", "v1beta2"
PREFIX = f"/apis/{GROUP}/{VERSION}"
DEFAULT_LIMIT = 1000

RESOURCES: list[dict[str, Any]] = [
    {"name": "clusterqueues", "singularName": "clusterqueue", "namespaced": False, "kind": "ClusterQueue",
     "verbs": ["get"]},
    {"name": "clusterqueues/pendingworkloads", "singularName": "", "namespaced": False,
     "kind": "PendingWorkloadsSummary", "verbs": ["get"]},
    {"name": "localqueues", "singularName": "localqueue", "namespaced": True, "kind": "LocalQueue",
     "verbs": ["get"]},
    {"name": "localqueues/pendingworkloads", "singularName": "", "namespaced": True,
     "kind": "PendingWorkloadsSummary", "verbs": ["get"]},
]


def pending_in_cluster_queue(store: Store, cluster_queue: str) -> list[dict[str, Any]]:
    """The ClusterQueue's pending workloads in admission order, as visibility PendingWorkload items."""
    queues = wls.Queues(store.list(LOCALQUEUE)[0], store.list(CLUSTERQUEUE)[0])
    pending = sorted((wl for wl in store.list(WORKLOAD)[0]
                      if wls.is_pending(wl) and queues.cluster_queue_of(wl) == cluster_queue), key=wls.order_key)
    per_local: dict[tuple[str, str], int] = {}
    items = []
    for position, wl in enumerate(pending):
        meta = wl["metadata"]
        key = (meta["namespace"], wl["spec"]["queueName"])
        in_local = per_local.get(key, 0)
        per_local[key] = in_local + 1
        item_meta = {k: meta[k] for k in ("name", "namespace", "creationTimestamp", "ownerReferences") if k in meta}
        items.append({"metadata": item_meta, "priority": wls.priority(wl), "localQueueName": key[1],
                      "positionInClusterQueue": position, "positionInLocalQueue": in_local})
    return items


def _summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "PendingWorkloadsSummary", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {"creationTimestamp": None}, "items": items}


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _page(request: web.Request) -> tuple[int, int] | web.Response:
    values = []
    for name, default in (("offset", 0), ("limit", DEFAULT_LIMIT)):
        raw = request.query.get(name)
        try:
            value = default if raw in (None, "") else int(raw)
        except ValueError:
            value = -1
        if value < 0:
            return _status(400, "BadRequest", f"{name} must be a whole number of 0 or more, not {raw!r}")
        values.append(value)
    return values[0], values[1]


def make_visibility_extension(store: Store) -> Callable[[web.Application], None]:
    """The extension for `make_app(..., extensions=[...])`: routes plus discovery of the visibility group."""

    async def cluster_queue(request: web.Request) -> web.Response:
        page = _page(request)
        if isinstance(page, web.Response):
            return page
        name = request.match_info["name"]
        try:
            store.get(CLUSTERQUEUE, None, name)
        except NotFound:
            return _status(404, "NotFound", f'clusterqueues.{GROUP} "{name}" not found',
                           {"name": name, "group": GROUP, "kind": "clusterqueues"})
        offset, limit = page
        return web.json_response(_summary(pending_in_cluster_queue(store, name)[offset:offset + limit]))

    async def local_queue(request: web.Request) -> web.Response:
        page = _page(request)
        if isinstance(page, web.Response):
            return page
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            lq = store.get(LOCALQUEUE, ns, name)
        except NotFound:
            err = not_found(LOCALQUEUE, name)
            return _status(404, "NotFound", err.message.replace(f"{LOCALQUEUE.group}", GROUP),
                           {"name": name, "group": GROUP, "kind": "localqueues"})
        cq = (lq.get("spec") or {}).get("clusterQueue", "")
        items = [i for i in pending_in_cluster_queue(store, cq)
                 if i["metadata"]["namespace"] == ns and i["localQueueName"] == name]
        offset, limit = page
        return web.json_response(_summary(items[offset:offset + limit]))

    def extend(app: web.Application) -> None:
        app.router.add_get(PREFIX + "/clusterqueues/{name}/pendingworkloads", cluster_queue)
        app.router.add_get(PREFIX + "/namespaces/{namespace}/localqueues/{name}/pendingworkloads", local_queue)
        register_api_group(app, GROUP, VERSION, RESOURCES)

    return extend
