"""Kubernetes core/v1 Events written the way the kubelet's and scheduler's event recorders write them.

KubeSpawner shows a pod's events as spawn progress and `kubectl describe` lists them, so the fields that tools
read (reason, message, involvedObject, source, count, first/lastTimestamp, type) are all filled. Repeats of the
same event are aggregated into one object whose `count` grows, as the client-go recorder does.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.store import NotFound, Store, StoreError


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
    """Writes Events for one component (`default-scheduler`, `kubelet`, `job-controller`)."""

    def __init__(self, store: Store, component: str, host: str = "") -> None:
        self._store = store
        self._component = component
        self._host = host
        # (namespace, uid, reason, message) -> (event name, last write time): the aggregation cache.
        self._seen: dict[tuple[str, str, str, str], str] = {}

    def record(self, obj: dict[str, Any], reason: str, message: str, *, type: str = "Normal",
               host: str | None = None, field_path: str | None = None) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta.get("uid", ""), reason, message)
        stamp = now()
        name = self._seen.get(key)
        if name is not None:
            def bump(ev: dict[str, Any]) -> None:
                ev["count"] = int(ev.get("count") or 1) + 1
                ev["lastTimestamp"] = stamp
            try:
                self._store.modify(kinds.EVENT, namespace, name, bump)
                return
            except NotFound:
                pass  # expired or deleted: write a fresh one
        involved: dict[str, Any] = {
            "kind": obj.get("kind", ""),
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "apiVersion": obj.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        source: dict[str, str] = {"component": self._component}
        node = host if host is not None else self._host
        if node:
            source["host"] = node
        # Kubernetes names events <object>.<hex nanoseconds>; the random suffix keeps names unique here.
        name = f"{meta.get('name', 'object')}.{int(time.time() * 1e9):x}{secrets.token_hex(2)}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
            "type": type,
            "reportingComponent": self._component,
            "reportingInstance": node or "",
        }
        try:
            self._store.create(kinds.EVENT, event)
        except StoreError:
            # Events are best effort, as in Kubernetes (e.g. the namespace is being deleted).
            return
        self._seen[key] = name
        if len(self._seen) > 10000:
            self._seen.clear()
