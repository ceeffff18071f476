"""The jobs service's Kubernetes side: create, read, follow and delete jobs with the hub's identity.

Reads go through `call_api` with plain JSON (the objects are handed on as dicts, as the API server sends them);
writes through the typed APIs with dict bodies. Only this module talks to the cluster, so the handlers stay
HTTP-and-policy only.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from aifacility.facility.model import Facility
from aifacility.jobs.manifest import MANAGED_BY, USER_LABEL, home_claim, user_label
from aifacility.jobs.unfinished import UnfinishedJobs
from aifacility.kueue.api import JOB_UID_LABEL, KUEUE_GROUP, KUEUE_VERSION
from aifacility.kueue.positions import PendingWorkload, local_queue_positions
from aifacility.spawner.storage import Claims

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
SITE_LABEL_KEY = "aifacility.io/site"
# The Status column of the API server's job table (kubectl's printer) for a Job that status.ended() calls ended:
# SuccessCriteriaMet and FailureTarget come before Complete and Failed, and the watch counts them as ended too.
TABLE_ENDED = frozenset({"Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"})


async def api_client() -> client.ApiClient:
    """The hub's identity: in a pod its service account, else the kubeconfig the hub was given."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    cfg = client.Configuration()
    await config.load_kube_config(client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


class JobsCluster:
    def __init__(self, api: client.ApiClient, facility: Facility) -> None:
        self.api = api
        self.facility = facility
        self.ns = facility.namespace
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.claims = Claims(self.core, self.ns, facility)
        self.unfinished_jobs = UnfinishedJobs(api, self.ns, _selector(MANAGED_BY))

    async def _get(self, path: str, query: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = await self.api.call_api(
            path, "GET", query_params=query or [], header_params={"Accept": "application/json"},
            response_types_map={200: "object"}, auth_settings=["BearerToken"], _return_http_data_only=True,
            _request_timeout=30)
        return body

    # --- create ----------------------------------------------------------------------------------------------

    async def ensure_storage(self, user: str, groups: list[str]) -> None:
        await self.claims.ensure_all(home_claim(user), user, groups)

    async def create(self, job: Any, secret: Any) -> dict[str, Any]:
        """The Secret first (the pod needs it), then the Job, then the Secret's owner: the Job, so that
        Kubernetes deletes it with the Job. A failed Job creation removes the Secret again."""
        if secret is not None:
            await self.core.create_namespaced_secret(self.ns, secret, _request_timeout=30)
        try:
            created = await self.batch.create_namespaced_job(self.ns, job, _request_timeout=30)
        except BaseException:
            if secret is not None:
                await self.core.delete_namespaced_secret(secret["metadata"]["name"], self.ns, _request_timeout=30)
            raise
        if secret is not None:
            owner = {"apiVersion": "batch/v1", "kind": "Job", "name": created.metadata.name,
                     "uid": created.metadata.uid, "blockOwnerDeletion": False}
            await self.core.patch_namespaced_secret(secret["metadata"]["name"], self.ns,
                                                    {"metadata": {"ownerReferences": [owner]}}, _request_timeout=30)
        out: dict[str, Any] = self.api.sanitize_for_serialization(created)
        self.unfinished_jobs.saw(out)  # counted at once: a burst of submissions cannot outrun the watch
        return out

    # --- read ------------------------------------------------------------------------------------------------

    async def jobs(self, user: str | None = None) -> list[dict[str, Any]]:
        """The facility's jobs, newest first; only `user`'s when given (by label, then exactly by owner)."""
        labels = dict(MANAGED_BY)
        if user is not None:
            labels[USER_LABEL] = user_label(user)
        body = await self._get(f"/apis/batch/v1/namespaces/{self.ns}/jobs", [("labelSelector", _selector(labels))])
        items = body.get("items") or []
        items.sort(key=lambda j: j["metadata"].get("creationTimestamp", ""), reverse=True)
        return items

    async def unfinished(self, user: str) -> int:
        """How many of the user's jobs have not ended: from the watch of jobs while it is in step, else read as the
        API server's table of jobs (the columns `kubectl get jobs` prints, no objects)."""
        known = self.unfinished_jobs.count(user_label(user))
        if known is not None:
            return known
        body: dict[str, Any] = await self.api.call_api(
            f"/apis/batch/v1/namespaces/{self.ns}/jobs", "GET",
            query_params=[("labelSelector", _selector({**MANAGED_BY, USER_LABEL: user_label(user)})),
                          ("includeObject", "None")],
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
            response_types_map={200: "object"}, auth_settings=["BearerToken"], _return_http_data_only=True,
            _request_timeout=30)
        columns = [c.get("name") for c in body.get("columnDefinitions") or []]
        status = columns.index("Status") if "Status" in columns else None
        rows = body.get("rows") or []
        if status is None:  # an API server without the column: count them all (the limit errs on the safe side)
            return len(rows)
        return sum(1 for r in rows if (r.get("cells") or [None] * len(columns))[status] not in TABLE_ENDED)

    async def job(self, name: str) -> dict[str, Any] | None:
        try:
            job = await self._get(f"/apis/batch/v1/namespaces/{self.ns}/jobs/{quote(name, safe='')}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return job if ((job.get("metadata") or {}).get("labels") or {}).get(
            "app.kubernetes.io/managed-by") == MANAGED_BY["app.kubernetes.io/managed-by"] else None

    async def pod(self, job: Mapping[str, Any]) -> dict[str, Any] | None:
        """The job's newest pod (a job runs one; backoffLimit is 0)."""
        body = await self._get(f"/api/v1/namespaces/{self.ns}/pods",
                               [("labelSelector", f"{JOB_NAME_LABEL}={job['metadata']['name']}")])
        items = sorted(body.get("items") or [], key=lambda p: p["metadata"].get("creationTimestamp", ""))
        return items[-1] if items else None

    async def workload(self, job: Mapping[str, Any]) -> dict[str, Any] | None:
        body = await self._get(f"/apis/{KUEUE_GROUP}/{KUEUE_VERSION}/namespaces/{self.ns}/workloads",
                               [("labelSelector", f"{JOB_UID_LABEL}={job['metadata']['uid']}")])
        items = body.get("items") or []
        return items[0] if items else None

    async def cluster_queue(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._get(f"/apis/{KUEUE_GROUP}/{KUEUE_VERSION}/clusterqueues/{quote(name, safe='')}")
        except ApiException as e:
            if e.status in (403, 404):  # a hub without the right to read queues still describes its jobs
                return None
            raise

    async def positions(self, queue: str) -> list[PendingWorkload]:
        return await local_queue_positions(self.api, self.ns, queue)

    async def sites(self) -> dict[str, str]:
        body = await self._get("/api/v1/nodes")
        return {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(SITE_LABEL_KEY, "local")
                for n in body.get("items") or []}

    async def logs(self, pod: str, container: str, follow: bool) -> AsyncIterator[bytes]:
        resp: Any = await self.core.read_namespaced_pod_log(pod, self.ns, container=container, follow=follow,
                                                       _preload_content=False)
        try:
            async for chunk in resp.content.iter_chunked(16 * 1024):
                yield chunk
        finally:
            resp.release()

    # --- delete ----------------------------------------------------------------------------------------------

    async def delete(self, name: str) -> None:
        try:
            await self.batch.delete_namespaced_job(name, self.ns, propagation_policy="Background",
                                                   _request_timeout=30)
        except ApiException as e:
            if e.status != 404:
                raise
