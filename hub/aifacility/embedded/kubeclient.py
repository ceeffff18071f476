"""A small asynchronous Kubernetes REST client over aiohttp, for the node agent.

The agent works on plain JSON objects (what its pod runner was written for), with client-certificate or
bearer-token credentials from a kubeconfig. `follow` is the shape of a client-go informer: list, then watch from
the list's resourceVersion, listing again after 410 Gone or a broken connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Any]
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, body: Mapping[str, Any] | str) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, Mapping) else body
        self.reason = body.get("reason", "") if isinstance(body, Mapping) else ""
        super().__init__(f"{status}: {message}")


class KubeClient:
    def __init__(self, kubeconfig: Path, *, user_agent: str = "aifacility-node-agent") -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        ctx_name = config["current-context"]
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        self.server = cluster["server"].rstrip("/")
        self.ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if "client-certificate" in user:
            self.ssl.load_cert_chain(user["client-certificate"], user["client-key"])
        if "token" in user:
            self.headers["Authorization"] = f"Bearer {user['token']}"
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers, connector=aiohttp.TCPConnector(ssl=self.ssl, limit=20),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.server + path, params=params, data=data, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=60)) as r:
            text = await r.text()
            try:
                payload: Any = json.loads(text) if text else {}
            except ValueError:
                payload = text
            if r.status >= 400:
                raise ApiError(r.status, payload)
            return payload

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return dict(await self.request("GET", path))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return dict(await self.request("POST", path, body=obj))

    async def patch(self, path: str, patch: Any, content_type: str = STRATEGIC) -> dict[str, Any]:
        return dict(await self.request("PATCH", path, body=patch, content_type=content_type))

    async def delete(self, path: str, body: Mapping[str, Any] | None = None) -> None:
        try:
            await self.request("DELETE", path, body=body)
        except ApiError as e:
            if e.status != 404:
                raise

    async def list(self, path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        body = await self.request("GET", path, params=params)
        return list(body.get("items") or []), str(body["metadata"].get("resourceVersion", ""))

    async def watch(self, path: str, resource_version: str, **params: str) -> AsyncIterator[tuple[str, Any]]:
        query = {**params, "watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": "300"}
        async with self.session.get(self.server + path, params=query,
                                    timeout=aiohttp.ClientTimeout(total=None, sock_read=330)) as r:
            if r.status >= 400:
                raise ApiError(r.status, await r.text())
            async for line in r.content:
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]


async def follow(client: KubeClient, path: str, handler: Handler, *, synced: asyncio.Event | None = None,
                 retry_seconds: float = 1.0, **params: str) -> None:
    """Call handler(type, object) for every object (as ADDED), then for every change, forever.

    The handler must be idempotent (a relist replays ADDED for everything), as client-go's handlers are."""
    while True:
        try:
            items, rv = await client.list(path, **params)
            for item in items:
                _call(handler, "ADDED", item)
            if synced is not None:
                synced.set()
            async for type_, obj in client.watch(path, rv, **params):
                if type_ == "BOOKMARK":
                    continue
                if type_ == "ERROR":
                    break  # 410 Gone: list again
                _call(handler, type_, obj)
        except asyncio.CancelledError:
            raise
        except (TimeoutError, aiohttp.ClientError, ApiError, OSError, ValueError) as e:
            log.info("watch of %s ended (%s); listing again", path, e)
            await asyncio.sleep(retry_seconds)


def _call(handler: Handler, type_: str, obj: dict[str, Any]) -> None:
    """One bad object must not stop a controller from seeing the others."""
    try:
        handler(type_, obj)
    except Exception:
        log.exception("handler for %s %s failed", obj.get("kind"), type_)


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    tasks.clear()
