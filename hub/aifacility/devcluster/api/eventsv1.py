"""events.k8s.io/v1 Events as a view of the core v1 Events (one object, two API shapes), as in Kubernetes.

The field correspondence is the one of Kubernetes' events/v1 conversion: `regarding` is `involvedObject`,
`note` is `message`, `reportingController` is `reportingComponent`, and the legacy fields are `deprecated*`.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

from .. import kinds
from ..kinds import Kind
from ..store import Store, Watcher, WatchEvent

Obj = dict[str, Any]

# (core v1 field, events.k8s.io/v1 field)
FIELDS = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
)
_COMMON = ("metadata", "eventTime", "series", "reportingInstance", "action", "reason", "related", "type")


def to_v1(core: Obj) -> Obj:
    out: Obj = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for key in _COMMON:
        if core.get(key) is not None:
            out[key] = copy.deepcopy(core[key])
    for core_key, v1_key in FIELDS:
        if core.get(core_key) not in (None, "", {}, 0):
            out[v1_key] = copy.deepcopy(core[core_key])
    if not out.get("eventTime"):
        # eventTime is required in this API; legacy events only have second-resolution timestamps.
        stamp = core.get("firstTimestamp") or core.get("lastTimestamp") or core["metadata"].get("creationTimestamp")
        if isinstance(stamp, str) and stamp.endswith("Z") and "." not in stamp:
            out["eventTime"] = stamp[:-1] + ".000000Z"
    if isinstance(out.get("series"), dict):
        out["series"].pop("state", None)
    return out


def to_core(v1: Obj) -> Obj:
    out: Obj = {"kind": "Event", "apiVersion": "v1"}
    for key in _COMMON:
        if key in v1:
            out[key] = copy.deepcopy(v1[key])
    for core_key, v1_key in FIELDS:
        if v1_key in v1:
            out[core_key] = copy.deepcopy(v1[v1_key])
    return out


def selector_to_core(selector: str | None) -> str | None:
    """Field selectors name the v1 fields; the stored objects have the core ones."""
    if not selector:
        return selector
    terms = []
    for term in selector.split(","):
        for core_key, v1_key in FIELDS:
            if term.strip().startswith(v1_key + ".") or term.strip().split("=")[0].rstrip("!") == v1_key:
                term = term.replace(v1_key, core_key, 1)
                break
        terms.append(term)
    return ",".join(terms)


class _V1Watcher:
    def __init__(self, inner: Watcher) -> None:
        self.inner = inner

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        event = await self.inner.__anext__()
        if event.type in ("ADDED", "MODIFIED", "DELETED"):
            return WatchEvent(event.type, to_v1(event.object))
        if event.type == "BOOKMARK":
            event.object["apiVersion"] = "events.k8s.io/v1"
        return event

    def close(self) -> None:
        self.inner.close()


class ApiStore:
    """The store as the API serves it: every kind as stored, except events.k8s.io/v1 Events, converted."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def resource_version(self) -> str:
        return self.store.resource_version

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        if kind is kinds.EVENT_V1:
            return to_v1(self.store.get(kinds.EVENT, namespace, name))
        return self.store.get(kind, namespace, name)

    def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        if kind is kinds.EVENT_V1:
            items, rv = self.store.list(kinds.EVENT, namespace, label_selector, selector_to_core(field_selector))
            return [to_v1(i) for i in items], rv
        return self.store.list(kind, namespace, label_selector, field_selector)

    def create(self, kind: Kind, obj: Obj) -> Obj:
        if kind is kinds.EVENT_V1:
            return to_v1(self.store.create(kinds.EVENT, to_core(obj)))
        return self.store.create(kind, obj)

    def update(self, kind: Kind, obj: Obj, *, subresource: str | None = None) -> Obj:
        if kind is kinds.EVENT_V1:
            return to_v1(self.store.update(kinds.EVENT, to_core(obj), subresource=subresource))
        return self.store.update(kind, obj, subresource=subresource)

    def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
    ) -> Obj:
        stored = kinds.EVENT if kind is kinds.EVENT_V1 else kind
        result = self.store.delete(
            stored, namespace, name, grace_period_seconds=grace_period_seconds, propagation_policy=propagation_policy
        )
        return to_v1(result) if kind is kinds.EVENT_V1 else result

    def watch(
        self,
        kind: Kind,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        bookmark_interval: float | None = None,
    ) -> Watcher | _V1Watcher:
        if kind is kinds.EVENT_V1:
            inner = self.store.watch(
                kinds.EVENT,
                namespace,
                resource_version,
                label_selector,
                selector_to_core(field_selector),
                bookmark_interval=bookmark_interval,
            )
            return _V1Watcher(inner)
        return self.store.watch(
            kind, namespace, resource_version, label_selector, field_selector, bookmark_interval=bookmark_interval
        )
