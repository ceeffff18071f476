"""Keeping the groups' Kueue ClusterQueues at the quotas in force: the facility file's, with the policies over it.

A change is applied to the ClusterQueue before the policy is saved (a refusal by the API server or Kueue's
webhook then saves nothing), and every `interval` seconds all queues are brought back to the policies in force:
after a restart of the admin service, or when `aifacility up` or a Helm upgrade re-applied the facility file's
quotas. Only `spec.resourceGroups` is written (a JSON merge patch replaces that list whole); the flavors, the
cohort and the LocalQueues stay the facility file's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from aifacility.facility.model import Facility
from aifacility.kueue.api import KUEUE_GROUP, KUEUE_VERSION
from aifacility.kueue.render import cluster_queue

log = logging.getLogger("aifacility.admin")
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "aifacility-admin"  # who last set a queue's quota, in its managedFields


async def kueue_request(api: client.ApiClient, method: str, path: str, body: Any = None,
                        field_manager: str | None = None, query: list[tuple[str, str]] | None = None) -> Any:
    """A call to Kueue's API (`path` below /apis/kueue.x-k8s.io/<version>); a body is sent as a JSON merge patch."""
    headers = {"Accept": "application/json", **({"Content-Type": MERGE_PATCH} if body is not None else {})}
    params = [*(query or []), *([("fieldManager", field_manager)] if field_manager else [])]
    return await api.call_api(
        f"/apis/{KUEUE_GROUP}/{KUEUE_VERSION}{path}", method, body=body, query_params=params, header_params=headers,
        response_types_map={200: "object"}, auth_settings=["BearerToken"], _return_http_data_only=True,
        _request_timeout=30)


class QueueSyncError(RuntimeError):
    """The cluster refused or did not answer; the message says which queue and why."""


class QueueSync:
    def __init__(self, api: client.ApiClient | None) -> None:
        self.api = api  # None: the facility has no cluster to reach (tests of the policies alone)

    async def apply(self, facility: Facility, groups: Iterable[str]) -> list[str]:
        """Set these groups' ClusterQueues to `facility`'s quotas; the names of the queues written."""
        if self.api is None or not facility.queues.enabled:
            return []
        written = []
        for group in groups:
            if group not in facility.queues.groups:
                continue
            body = {"spec": {"resourceGroups": cluster_queue(facility, group)["spec"]["resourceGroups"]}}
            try:
                await kueue_request(self.api, "PATCH", f"/clusterqueues/{quote(group, safe='')}", body,
                                    FIELD_MANAGER)
            except ApiException as e:
                raise QueueSyncError(f"the cluster refused the new quota of ClusterQueue '{group}': "
                                     f"{_reason(e)}") from None
            except (TimeoutError, OSError) as e:
                raise QueueSyncError(f"the cluster did not answer ({e}); nothing was changed") from None
            written.append(group)
        return written

    async def keep(self, reconcile: Callable[[], Awaitable[object]], interval: float) -> None:
        """Every `interval` seconds, `reconcile()`: bring every queue to the policies in force (it must hold the
        same lock as the policy changes, or it could write a quota read just before a change over that change)."""
        while True:
            try:
                await reconcile()
            except QueueSyncError as e:
                log.warning("Could not bring the ClusterQueues to the policies in force: %s", e)
            await asyncio.sleep(interval)

def _reason(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or b"{}").get("message") or e.reason)
    except (ValueError, TypeError, AttributeError):
        return str(e.reason)
