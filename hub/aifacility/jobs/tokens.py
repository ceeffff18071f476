"""Keeps the IAM token files of unfinished jobs fresh.

A job's pod reads its owner's IAM token from a Secret (`<job>-token`, see `aifacility.auth.jobs`), which the kubelet
keeps in step with the file in the pod. Every `interval` seconds the jobs service lists those Secrets; for each
whose token expires within `margin` seconds (or whose expiry is not known yet: right after submission) and whose
job has not ended, it asks the hub for the owner's fresh token (the service holds the hub's
`custom:iam-tokens:read` scope) and writes it, with its expiry, into the Secret. `margin` must stay below the hub's
`IAMAuthenticator.token_min_lifetime` (120 s), so that the hub renews a token the keeper asks for.

A user whose IAM login has ended gets no new token: the job keeps the last one until it expires (logged), and the
keeper asks again only every `refused_backoff` seconds. Offloaded jobs run with the token they started with: an
interLink site receives the pod's files once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from aifacility.auth.jobs import TOKEN_FOR_LABEL, TOKEN_KEY
from aifacility.hubapi import HubClient
from aifacility.jobs.manifest import OWNER_ANNOTATION
from aifacility.jobs.status import ended

log = logging.getLogger("aifacility.jobs")

EXPIRES_ANNOTATION = "aifacility.io/token-expires-at"  # on the Secret: when its token expires (Unix seconds)


class JobTokenKeeper:
    def __init__(self, api: client.ApiClient, namespace: str, hub: HubClient, *, margin: float = 100,
                 interval: float = 20, refused_backoff: float = 600) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.ns = namespace
        self.hub = hub
        self.margin = margin
        self.interval = interval
        self.refused_backoff = refused_backoff
        self._refused: dict[str, float] = {}  # Secret name -> when to ask again for a user whose login ended

    async def run(self) -> None:
        while True:
            try:
                await self.refresh_due()
            except Exception as e:  # the API server or the hub restarting: the next round tries again
                log.warning("refreshing the IAM tokens of running jobs failed: %s", e)
            await asyncio.sleep(self.interval)

    async def refresh_due(self) -> list[str]:
        """One round; the names of the Secrets that received a new token."""
        now = time.time()
        secrets = await self.core.list_namespaced_secret(self.ns, label_selector=TOKEN_FOR_LABEL, _request_timeout=30)
        refreshed = []
        for secret in secrets.items:
            name = secret.metadata.name
            expires = _float((secret.metadata.annotations or {}).get(EXPIRES_ANNOTATION))
            if (expires is not None and expires - now > self.margin) or self._refused.get(name, 0) > now:
                continue
            job = await self._job(secret.metadata.labels[TOKEN_FOR_LABEL])
            if job is None or ended(job):
                continue
            user = ((job.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION)
            if not user:
                continue
            fresh = await self.hub.iam_token(user)
            if fresh is None or not fresh.get("access_token"):
                log.info("no fresh IAM token for %s's job %s: their IAM login has ended", user, job["metadata"]["name"])
                self._refused[name] = now + self.refused_backoff
                continue
            self._refused.pop(name, None)
            if await self._write(name, str(fresh["access_token"]), fresh.get("expires_at")):
                refreshed.append(name)
        return refreshed

    async def _job(self, name: str) -> dict[str, Any] | None:
        try:
            job = await self.batch.read_namespaced_job(name, self.ns, _request_timeout=30)
        except ApiException as e:
            if e.status == 404:  # gone: its Secret goes with it (owner reference)
                return None
            raise
        out: dict[str, Any] = self.api.sanitize_for_serialization(job)
        return out

    async def _write(self, name: str, token: str, expires_at: Any) -> bool:
        try:
            await self.core.patch_namespaced_secret(name, self.ns, {
                # a token without an expiry is fetched again a day later
                "metadata": {"annotations": {EXPIRES_ANNOTATION: str(int(expires_at or time.time() + 86400))}},
                "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}, _request_timeout=30)
        except ApiException as e:
            if e.status == 404:  # the job ended and took its Secret along meanwhile
                return False
            raise
        return True


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
