"""The development cluster's object store: Kubernetes objects as JSON dicts, persisted in sqlite, with watches.

Everything runs on one asyncio loop, so every method is synchronous and atomic; watchers receive events through
per-watcher queues that are filled while the write happens, which keeps event order equal to resourceVersion
order without locks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import sqlite3
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from .kinds import ALL_KINDS, NAMESPACE, POD, SERVICEACCOUNT, Kind, name_problems
from .selectors import SelectorError, object_matcher

Obj = dict[str, Any]


class StoreError(Exception):
    """An error with the Kubernetes Status reason and HTTP code the API server answers with."""

    code: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


class NotFound(StoreError):
    code, reason = 404, "NotFound"


class AlreadyExists(StoreError):
    code, reason = 409, "AlreadyExists"


class Conflict(StoreError):
    code, reason = 409, "Conflict"


class Invalid(StoreError):
    code, reason = 422, "Invalid"


class Gone(StoreError):
    code, reason = 410, "Expired"


class TooLargeResourceVersion(StoreError):
    """A watch from a resourceVersion this store has not reached (e.g. the state was reset): clients re-list."""

    code, reason = 504, "Timeout"


class BadRequest(StoreError):
    code, reason = 400, "BadRequest"


class Forbidden(StoreError):
    code, reason = 403, "Forbidden"


def invalid(kind: Kind, name: str, causes: list[tuple[str, str]]) -> Invalid:
    """Kubernetes' 422: `Pod "x" is invalid: [field: message, ...]` with one cause per field."""
    parts = [f"{fld}: {msg}" for fld, msg in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {
        "name": name,
        "group": kind.group,
        "kind": kind.plural,
        "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": fld} for fld, msg in causes],
    }
    return Invalid(f"{kind.kind} {json.dumps(name)} is invalid: {joined}", details=details)


def check_shape(kind: Kind, obj: Obj) -> None:
    """Reject wrongly typed metadata (and non-object spec/status) before anything relies on their types."""
    name = obj["metadata"].get("name") if isinstance(obj.get("metadata"), dict) else None
    name = name if isinstance(name, str) else ""
    causes: list[tuple[str, str]] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise invalid(kind, name, [("metadata", "Invalid value: must be an object")])
    for key in ("name", "generateName", "namespace", "resourceVersion", "uid"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            causes.append((f"metadata.{key}", f"Invalid value: {json.dumps(meta[key])}: must be a string"))
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
            causes.append((f"metadata.{key}", "Invalid value: must be a map of string keys to string values"))
    finalizers = meta.get("finalizers")
    if finalizers is not None and (not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)):
        causes.append(("metadata.finalizers", "Invalid value: must be a list of strings"))
    refs = meta.get("ownerReferences")
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs)):
        causes.append(("metadata.ownerReferences", "Invalid value: must be a list of owner references"))
    for key in ("spec", "status"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            causes.append((key, f"Invalid value: {json.dumps(obj[key])[:80]}: must be an object"))
    if causes:
        raise invalid(kind, name, causes)


def not_found(kind: Kind, name: str) -> NotFound:
    what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return NotFound(f'{what} "{name}" not found', details={"name": name, "group": kind.group, "kind": kind.plural})


def now_rfc3339(delta_seconds: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class AdmissionHook(Protocol):
    def __call__(self, kind: Kind, operation: str, new: Obj | None, old: Obj | None) -> None: ...


@dataclass
class WatchEvent:
    type: str  # "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR"
    object: Obj


@dataclass
class _Change:
    rv: int
    key: str
    type: str
    obj: Obj
    old: Obj | None


# Kubernetes creates these namespaces itself; clients (and our docs) assume they exist.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_POLICY_FINALIZERS = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of apiserver's SimpleNameGenerator


def _key(kind: Kind) -> str:
    return f"{kind.group}/{kind.plural}"


def _ns(kind: Kind, namespace: str | None) -> str:
    return (namespace or "") if kind.namespaced else ""


def _rv_of(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


class Store:
    def __init__(self, path: Path | None = None, *, history_size: int = 20000) -> None:
        self._path = Path(path) if path is not None else None
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {_key(k): {} for k in ALL_KINDS}
        self._hooks: list[AdmissionHook] = []
        self._watchers: set[Watcher] = set()
        self._history: deque[_Change] = deque()
        self._history_size = history_size
        self._rv = 0
        self._db: sqlite3.Connection | None = None
        self._cluster_ips: set[str] = set()
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._open_db(self._path)
        # Watches may start from any resourceVersion at or after this one; older ones get 410 Gone.
        self._floor = self._rv
        for name in SYSTEM_NAMESPACES:
            if ("", name) not in self._objects[_key(NAMESPACE)]:
                self.create(NAMESPACE, {"metadata": {"name": name}})

    # ---- persistence -------------------------------------------------------------------------------------------

    def _open_db(self, path: Path) -> None:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; the dev cluster does not promise power-loss durability.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
            " rv INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, namespace, name))"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'resourceVersion'").fetchone()
        self._rv = int(row[0]) if row else 0
        for kind_key, namespace, name, body in db.execute("SELECT kind, namespace, name, body FROM objects"):
            if kind_key in self._objects:
                obj = json.loads(body)
                self._objects[kind_key][(namespace, name)] = obj
                ip = (obj.get("spec") or {}).get("clusterIP")
                if ip:
                    self._cluster_ips.add(ip)
        self._db = db

    def _persist(self, kind: Kind, namespace: str, name: str, obj: Obj | None) -> None:
        if self._db is None:
            return
        with self._db:
            self._db.execute("BEGIN")
            if obj is None:
                self._db.execute(
                    "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (_key(kind), namespace, name)
                )
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO objects (kind, namespace, name, rv, body) VALUES (?, ?, ?, ?, ?)",
                    (_key(kind), namespace, name, self._rv, json.dumps(obj, separators=(",", ":"))),
                )
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('resourceVersion', ?)", (str(self._rv),))

    def close(self) -> None:
        """Stop every watcher and close the database (the store is unusable afterwards)."""
        for w in list(self._watchers):
            w.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def state_dir(self) -> Path | None:
        return self._path.parent if self._path is not None else None

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def add_hook(self, hook: AdmissionHook) -> None:
        self._hooks.append(hook)

    @property
    def open_watchers(self) -> int:
        """How many watchers are registered (to see that finished clients release theirs)."""
        return len(self._watchers)

    @property
    def hooks(self) -> tuple[AdmissionHook, ...]:
        return tuple(self._hooks)

    # ---- reads ---------------------------------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self._objects[_key(kind)].get((_ns(kind, namespace), name))
        if obj is None:
            raise not_found(kind, name)
        return copy.deepcopy(obj)

    def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        match = self._matcher(label_selector, field_selector)
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._objects[_key(kind)].items())
            if (not namespace or not kind.namespaced or ns == namespace) and match(obj)
        ]
        return items, str(self._rv)

    @staticmethod
    def _matcher(label_selector: str | None, field_selector: str | None) -> Callable[[Obj], bool]:
        try:
            return object_matcher(label_selector, field_selector)
        except SelectorError as e:
            raise BadRequest(str(e)) from None

    # ---- writes --------------------------------------------------------------------------------------------------

    def create(self, kind: Kind, obj: Obj) -> Obj:
        new = copy.deepcopy(obj)
        if not isinstance(new, dict):
            raise BadRequest(f"a {kind.kind} must be a JSON object")
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be an object")
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        check_shape(kind, new)
        name = meta.get("name") or ""
        if not name:
            generate = meta.get("generateName") or ""
            if not generate:
                raise invalid(kind, "", [("metadata.name", "Required value: name or generateName is required")])
            name = self._generate_name(kind, meta, generate)
        meta["name"] = name
        problems = name_problems(kind, name)
        if problems:
            raise invalid(kind, name, [("metadata.name", f'Invalid value: "{name}": {"; ".join(problems)}')])
        namespace = ""
        if kind.namespaced:
            namespace = meta.get("namespace") or "default"
            meta["namespace"] = namespace
            self._require_namespace(namespace)
        else:
            meta.pop("namespace", None)
        if (namespace, name) in self._objects[_key(kind)]:
            what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise AlreadyExists(
                f'{what} "{name}" already exists', details={"name": name, "group": kind.group, "kind": kind.plural}
            )
        for drop in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(drop, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if kind.group:
            # Jobs and custom resources carry a generation (controllers report observedGeneration); core kinds
            # of Kubernetes 1.32 do not.
            meta["generation"] = 1
        _builtin_defaults(kind, new)
        for hook in self._hooks:
            hook(kind, "CREATE", new, None)
        if kind.kind == "Service":  # after the hooks, so that a rejected Service does not hold an address
            self._allocate_cluster_ip(new)
        stored = self._commit(kind, "ADDED", new, None)
        if kind is NAMESPACE:
            self._create_default_service_account(name)
        return stored

    def _generate_name(self, kind: Kind, meta: Obj, prefix: str) -> str:
        ns = _ns(kind, meta.get("namespace") or "default")
        for _ in range(20):
            name = prefix[:58] + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
            if (ns, name) not in self._objects[_key(kind)]:
                return name
        raise AlreadyExists(f"could not generate a unique name from generateName {prefix!r}; try again")

    def _require_namespace(self, namespace: str) -> None:
        ns = self._objects[_key(NAMESPACE)].get(("", namespace))
        if ns is None:
            raise not_found(NAMESPACE, namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise Forbidden(
                f"unable to create new content in namespace {namespace} because it is being terminated",
                details={"name": namespace, "kind": "namespaces"},
            )

    def _create_default_service_account(self, namespace: str) -> None:
        if (namespace, "default") not in self._objects[_key(SERVICEACCOUNT)]:
            self.create(SERVICEACCOUNT, {"metadata": {"name": "default", "namespace": namespace}})

    def _allocate_cluster_ip(self, svc: Obj) -> None:
        spec = svc.setdefault("spec", {})
        if spec.get("type", "ClusterIP") == "ExternalName" or spec.get("clusterIP") == "None":
            return
        if spec.get("clusterIP"):
            self._cluster_ips.add(spec["clusterIP"])
            return
        # 10.96.0.0/12 is kubeadm's default service range; .0.1 is the kubernetes service itself.
        for n in range(2, 1 << 20):
            ip = f"10.{96 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"
            if ip not in self._cluster_ips:
                self._cluster_ips.add(ip)
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
                return
        raise Forbidden("the service IP range 10.96.0.0/12 is exhausted")

    def update(self, kind: Kind, obj: Obj, *, subresource: str | None = None) -> Obj:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise BadRequest(f"a {kind.kind} must be a JSON object with a metadata object")
        meta = obj["metadata"]
        name = meta.get("name") or ""
        if not isinstance(name, str):
            raise invalid(kind, "", [("metadata.name", "Invalid value: must be a string")])
        if not name:
            raise invalid(kind, "", [("metadata.name", "Required value: name is required")])
        old = self._current(kind, meta.get("namespace"), name)
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"].get("resourceVersion"):
            what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise Conflict(
                f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                details={"name": name, "group": kind.group, "kind": kind.plural},
            )
        return self._update(kind, old, copy.deepcopy(obj), subresource, keep_status=True)

    def modify(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        fn: Callable[[Obj], None],
        *,
        subresource: str | None = None,
    ) -> Obj:
        old = self._current(kind, namespace, name)
        new = copy.deepcopy(old)
        fn(new)
        # Controllers are trusted to write spec and status together; the API's PUT is what keeps status.
        return self._update(kind, old, new, subresource, keep_status=False)

    def _current(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self._objects[_key(kind)].get((_ns(kind, namespace), name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    def _update(self, kind: Kind, old: Obj, new: Obj, subresource: str | None, *, keep_status: bool) -> Obj:
        if subresource not in (None, "status"):
            raise BadRequest(f"subresource {subresource!r} cannot be updated")
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            if keep_status and kind.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise BadRequest("metadata must be an object")
            # Identity and lifecycle fields belong to the server.
            for fixed in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if fixed in old["metadata"]:
                    meta[fixed] = old["metadata"][fixed]
                else:
                    meta.pop(fixed, None)
            meta.pop("managedFields", None)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        check_shape(kind, new)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)  # a no-op write: no new resourceVersion and no event, like Kubernetes
        if _spec_changed(kind, old, new) and "generation" in old["metadata"]:
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        for hook in self._hooks:
            hook(kind, "UPDATE", new, copy.deepcopy(old))
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and self._removable(kind, new):
            return self._commit(kind, "DELETED", new, old)
        return self._commit(kind, "MODIFIED", new, old)

    @staticmethod
    def _removable(kind: Kind, obj: Obj) -> bool:
        """A marked object goes once its finalizers are gone, unless a node still has to stop its containers."""
        if kind is POD and (obj.get("spec") or {}).get("nodeName"):
            return obj["metadata"].get("deletionGracePeriodSeconds") == 0
        return True

    def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
    ) -> Obj:
        if propagation_policy not in (None, "Background", "Foreground", "Orphan"):
            raise BadRequest(f"propagationPolicy {propagation_policy!r} is not one of Background, Foreground, Orphan")
        if grace_period_seconds is not None and grace_period_seconds < 0:
            grace_period_seconds = 0
        if kind is NAMESPACE and name in ("default", "kube-system", "kube-public"):
            raise Forbidden(
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                details={"name": name, "kind": "namespaces"},
            )
        old = self._current(kind, namespace, name)
        for hook in self._hooks:
            hook(kind, "DELETE", None, copy.deepcopy(old))
        meta = old["metadata"]
        if kind is NAMESPACE:
            return self._delete_namespace(old)
        bound_pod = kind is POD and bool((old.get("spec") or {}).get("nodeName"))
        if meta.get("deletionTimestamp"):
            # Already terminating: only a forced deletion (grace 0) shortens it.
            if grace_period_seconds == 0 and bound_pod and meta.get("deletionGracePeriodSeconds") != 0:
                new = copy.deepcopy(old)
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                if not meta.get("finalizers"):
                    return self._commit(kind, "DELETED", new, old)
                return self._commit(kind, "MODIFIED", new, old)
            return copy.deepcopy(old)
        # As the real API server does, the policy becomes a finalizer that the garbage collector acts on.
        policy_finalizer = _POLICY_FINALIZERS.get(propagation_policy or "")
        if bound_pod and grace_period_seconds != 0:
            grace = grace_period_seconds
            if grace is None:
                grace = int((old.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            return self._mark(kind, old, grace, policy_finalizer)
        if meta.get("finalizers") or policy_finalizer:
            return self._mark(kind, old, 0, policy_finalizer)
        return self._commit(kind, "DELETED", copy.deepcopy(old), old)

    def _mark(self, kind: Kind, old: Obj, grace: int, finalizer: str | None = None) -> Obj:
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = now_rfc3339(grace)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        if finalizer:
            finalizers = new["metadata"].setdefault("finalizers", [])
            if finalizer not in finalizers:
                finalizers.append(finalizer)
        return self._commit(kind, "MODIFIED", new, old)

    def _delete_namespace(self, ns_obj: Obj) -> Obj:
        name = ns_obj["metadata"]["name"]
        new = copy.deepcopy(ns_obj)
        if not new["metadata"].get("deletionTimestamp"):
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            new = self._commit(NAMESPACE, "MODIFIED", new, ns_obj)
        # The namespace controller's job, done inline: delete the contents, then the namespace once it is empty.
        for kind in ALL_KINDS:
            if kind.namespaced:
                for ns, obj_name in [k for k in self._objects[_key(kind)] if k[0] == name]:
                    self.delete(kind, ns, obj_name)
        return self._finish_namespace(name) or new

    def _finish_namespace(self, name: str) -> Obj | None:
        current = self._objects[_key(NAMESPACE)].get(("", name))
        if current is None or not current["metadata"].get("deletionTimestamp"):
            return None
        for kind in ALL_KINDS:
            if kind.namespaced and any(k[0] == name for k in self._objects[_key(kind)]):
                return None
        return self._commit(NAMESPACE, "DELETED", copy.deepcopy(current), current)

    def remove(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        old = self._current(kind, namespace, name)
        if old["metadata"].get("finalizers"):
            # Finalizers still hold it: it stays marked, with nothing left for the node to do.
            new = copy.deepcopy(old)
            new["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if new == old:
                return copy.deepcopy(old)
            return self._commit(kind, "MODIFIED", new, old)
        return self._commit(kind, "DELETED", copy.deepcopy(old), old)

    def _commit(self, kind: Kind, event: str, new: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        namespace, name = new["metadata"].get("namespace", "") if kind.namespaced else "", new["metadata"]["name"]
        table = self._objects[_key(kind)]
        if event == "DELETED":
            table.pop((namespace, name), None)
            ip = (new.get("spec") or {}).get("clusterIP") if kind.kind == "Service" else None
            self._cluster_ips.discard(ip or "")
        else:
            table[(namespace, name)] = new
        self._persist(kind, namespace, name, None if event == "DELETED" else new)
        change = _Change(self._rv, _key(kind), event, new, old)
        self._history.append(change)
        while len(self._history) > self._history_size:
            self._floor = self._history.popleft().rv
        for w in list(self._watchers):
            w._offer(change)
        if event == "DELETED" and namespace:
            self._finish_namespace(namespace)
        return copy.deepcopy(new)

    # ---- watch ---------------------------------------------------------------------------------------------------

    def watch(
        self,
        kind: Kind,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        bookmark_interval: float | None = None,
    ) -> Watcher:
        """Events after `resource_version` (None, "" or "0": from now on); Gone when history no longer has them."""
        match = self._matcher(label_selector, field_selector)
        start = self._rv
        if resource_version not in (None, "", "0"):
            try:
                start = int(str(resource_version))
            except ValueError:
                raise BadRequest(f"resourceVersion {resource_version!r} is not a valid resource version") from None
            if start < self._floor:
                raise Gone(f"too old resource version: {start} ({self._floor})")
            if start > self._rv:
                raise TooLargeResourceVersion(
                    f"Timeout: Too large resource version: {start}, current: {self._rv}",
                    details={
                        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                        "retryAfterSeconds": 1,
                    },
                )
        watcher = Watcher(self, kind, namespace if kind.namespaced else None, match, bookmark_interval)
        for change in self._history:
            if change.rv > start:
                watcher._offer(change)
        self._watchers.add(watcher)
        return watcher


def _spec_changed(kind: Kind, old: Obj, new: Obj) -> bool:
    """What bumps metadata.generation: for custom resources anything but metadata and status, else the spec."""
    if kind.group and kind.group != "batch":
        strip = ("metadata", "status")
        return {k: v for k, v in old.items() if k not in strip} != {k: v for k, v in new.items() if k not in strip}
    return old.get("spec") != new.get("spec")


def _builtin_defaults(kind: Kind, obj: Obj) -> None:
    """The defaults the real API server fills in and that clients read back (kept small on purpose)."""
    if kind is NAMESPACE:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        labels = obj["metadata"].setdefault("labels", {})
        labels.setdefault("kubernetes.io/metadata.name", obj["metadata"]["name"])
    elif kind is POD:
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif kind.kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind.kind == "PersistentVolumeClaim":
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif kind.kind == "PersistentVolume":
        obj.setdefault("status", {}).setdefault("phase", "Available")


@dataclass
class Watcher:
    """An async iterator of WatchEvents for one kind (optionally one namespace and selectors)."""

    store: Store
    kind: Kind
    namespace: str | None
    match: Callable[[Obj], bool]
    bookmark_interval: float | None = None
    _queue: deque[WatchEvent] = field(default_factory=deque)
    _wakeup: asyncio.Event | None = None
    _closed: bool = False
    # A consumer this far behind is cut off with 410 Gone (it re-lists), as the real watch cache does.
    max_backlog: int = 50000

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def _offer(self, change: _Change) -> None:
        if self._closed or change.key != _key(self.kind):
            return
        if self.namespace and change.obj["metadata"].get("namespace") != self.namespace:
            return
        now_matches = self.match(change.obj)
        was_matching = change.old is not None and self.match(change.old)
        event_type = change.type
        if change.type == "MODIFIED":
            # Objects moving in or out of a selector appear as ADDED / DELETED to this watcher, as in Kubernetes.
            if now_matches and not was_matching:
                event_type = "ADDED"
            elif was_matching and not now_matches:
                event_type = "DELETED"
            elif not now_matches:
                return
        elif not now_matches:
            return
        if len(self._queue) >= self.max_backlog:
            self._queue.clear()
            self._queue.append(WatchEvent("ERROR", Gone("the watcher fell too far behind; list again").status()))
            self._closed = True
        else:
            self._queue.append(WatchEvent(event_type, copy.deepcopy(change.obj)))
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self.store._watchers.discard(self)
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                self.store._watchers.discard(self)
                raise StopAsyncIteration
            self._wakeup.clear()
            if self.bookmark_interval is None:
                await self._wakeup.wait()
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.bookmark_interval)
            except TimeoutError:
                # The queue is empty, so every event up to the current resourceVersion has been delivered.
                return WatchEvent(
                    "BOOKMARK",
                    {
                        "kind": self.kind.kind,
                        "apiVersion": self.kind.api_version,
                        "metadata": {"resourceVersion": self.store.resource_version},
                    },
                )
