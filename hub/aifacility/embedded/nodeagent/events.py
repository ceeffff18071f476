"""Kubernetes core/v1 Events, written the way the kubelet's event recorder writes them, through the API.

KubeSpawner shows a pod's events as spawn progress and `kubectl describe` lists them, so the fields that tools
read (reason, message, involvedObject, source, count, first/lastTimestamp, type) are all filled. Repeats of the
same event are aggregated into one object whose `count` grows, as the client-go recorder does. Recording never
blocks the caller: events are written by a background task, best effort, as in Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aifacility.embedded.kubeclient import MERGE, ApiError, KubeClient

log = logging.getLogger(__name__)


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_nano() -> str:
    """RFC 3339 with sub-second digits (the CRI log format's time)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch for an RFC 3339 timestamp (None when absent or unreadable)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class EventRecorder:
    """Writes Events for one component (`kubelet`) on one node."""

    def __init__(self, client: KubeClient | None, component: str, host: str = "") -> None:
        self._client = client
        self._component = component
        self._host = host
        # (namespace, uid, reason, message) -> (event name, count): the aggregation cache.
        self._seen: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def record(self, obj: dict[str, Any], reason: str, message: str, *, type: str = "Normal",
               host: str | None = None, field_path: str | None = None) -> None:
        if self._client is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(
                self._write(obj, reason, message, type, host, field_path))
        except RuntimeError:
            return  # no loop (a unit test's synchronous call): nothing to write to
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, obj: dict[str, Any], reason: str, message: str, type_: str, host: str | None,
                     field_path: str | None) -> None:
        assert self._client is not None
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta.get("uid", ""), reason, message)
        stamp = now()
        base = f"/api/v1/namespaces/{namespace}/events"
        seen = self._seen.get(key)
        if seen is not None:
            name, count = seen
            try:
                await self._client.patch(f"{base}/{name}", {"count": count + 1, "lastTimestamp": stamp}, MERGE)
                self._seen[key] = (name, count + 1)
                return
            except ApiError:
                pass  # expired or deleted: write a fresh one
            except Exception as e:  # events are best effort
                log.debug("event %s: %s", reason, e)
                return
        involved: dict[str, Any] = {
            "kind": obj.get("kind", "Pod"), "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
            "uid": meta.get("uid", ""), "apiVersion": obj.get("apiVersion", "v1"),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        source: dict[str, str] = {"component": self._component}
        node = host if host is not None else self._host
        if node:
            source["host"] = node
        name = f"{meta.get('name', 'object')}.{int(time.time() * 1e9):x}{secrets.token_hex(2)}"
        event = {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved, "reason": reason, "message": message, "source": source,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1, "type": type_,
            "reportingComponent": self._component, "reportingInstance": node or "",
        }
        try:
            await self._client.create(base, event)
        except Exception as e:  # events are best effort (e.g. the namespace is going away)
            log.debug("event %s: %s", reason, e)
            return
        self._seen[key] = (name, 1)
        if len(self._seen) > 10000:
            self._seen.clear()
