"""Which of the facility's jobs have not ended, per user, kept current by a list and watch of the Jobs (what a
controller's informer does), so that a submission checks the per-user limit without listing them each time.

While the watch is not in step (at start, after an error) `count` answers None and the caller lists the jobs
itself: the limit is never checked against stale numbers for longer than a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from aifacility.jobs.manifest import USER_LABEL
from aifacility.jobs.status import ended

log = logging.getLogger("aifacility.jobs")

WATCH_SECONDS = 240  # the API server ends a watch after this; it is then resumed from the last version seen


class UnfinishedJobs:
    def __init__(self, api: client.ApiClient, namespace: str, selector: str) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.ns = namespace
        self.selector = selector
        self._jobs: dict[str, tuple[str, bool]] = {}  # job name -> (user label, ended)
        self._synced = False

    def count(self, label: str) -> int | None:
        """Unfinished jobs of the user with this label, or None while the watch is not in step."""
        if not self._synced:
            return None
        return sum(1 for who, done in self._jobs.values() if who == label and not done)

    def saw(self, job: Mapping[str, Any]) -> None:
        """Record a job (e.g. one just created, before its watch event arrives)."""
        meta = job.get("metadata") or {}
        self._jobs[meta["name"]] = ((meta.get("labels") or {}).get(USER_LABEL, ""), ended(job))

    async def run(self) -> None:
        """List, then follow changes; on any failure fall out of step, wait a moment and list again."""
        while True:
            try:
                await self._list_and_watch()
            except Exception as e:  # the API server restarting, a 410 Gone: start over from a fresh list
                log.info("the watch of jobs stopped (%s); listing them again", e)
            self._synced = False
            await asyncio.sleep(1)

    async def _list_and_watch(self) -> None:
        body: dict[str, Any] = await self.api.call_api(
            f"/apis/batch/v1/namespaces/{self.ns}/jobs", "GET", query_params=[("labelSelector", self.selector)],
            header_params={"Accept": "application/json"}, response_types_map={200: "object"},
            auth_settings=["BearerToken"], _return_http_data_only=True, _request_timeout=30)
        self._jobs = {}
        for job in body.get("items") or []:
            self.saw(job)
        version = body["metadata"]["resourceVersion"]
        self._synced = True
        while True:
            async with watch.Watch(return_type="object") as w:
                async for event in w.stream(self.batch.list_namespaced_job, self.ns, label_selector=self.selector,
                                            resource_version=version, timeout_seconds=WATCH_SECONDS,
                                            allow_watch_bookmarks=True):
                    obj = event["raw_object"]
                    if event["type"] == "DELETED":
                        self._jobs.pop(obj["metadata"]["name"], None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.saw(obj)
                    version = w.resource_version or version
            if version is None:
                raise ApiException(status=410, reason="no resource version to resume from")
