"""Server-side printing: meta.k8s.io/v1 Tables with the columns kubectl shows for each kind."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import kinds
from ..kinds import Kind

Obj = dict[str, Any]
Cell = Callable[[Obj], Any]


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _parse_time(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's duration.HumanDuration: 45s, 3m20s, 5h10m, 3d4h, 2y."""
    s = int(seconds)
    if s < 0:
        s = 0
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def age(stamp: str | None) -> str:
    t = _parse_time(stamp)
    return human_duration((datetime.now(UTC) - t).total_seconds()) if t else "<unknown>"


def _age_cell(obj: Obj) -> str:
    return age(_get(obj, "metadata.creationTimestamp"))


def _name(obj: Obj) -> str:
    return obj["metadata"]["name"]


# ---- pods --------------------------------------------------------------------------------------------------------


def pod_status_reason(pod: Obj) -> str:
    """The STATUS column, following kubectl's printPod: init states, waiting/terminated reasons, Terminating."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    init_statuses = status.get("initContainerStatuses") or []
    initializing = False
    n_init = len((pod.get("spec") or {}).get("initContainers") or [])
    for i, cs in enumerate(init_statuses):
        state = cs.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
            elif state.get("running") and cs.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _pod_ready(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    return f"{ready}/{total}"


def _pod_restarts(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return str(sum(int(cs.get("restartCount") or 0) for cs in statuses))


def _ready_gates(pod: Obj) -> str:
    gates = (pod.get("spec") or {}).get("readinessGates") or []
    if not gates:
        return "<none>"
    conds = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
    return f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"


# ---- other built-in kinds --------------------------------------------------------------------------------------


def _node_status(node: Obj) -> str:
    conds = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    text = "Ready" if conds.get("Ready") == "True" else "NotReady" if "Ready" in conds else "Unknown"
    if (node.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(node: Obj) -> str:
    roles = sorted(
        k.split("/", 1)[1]
        for k in (node["metadata"].get("labels") or {})
        if k.startswith("node-role.kubernetes.io/") and "/" in k
    )
    return ",".join(r for r in roles if r) or "<none>"


def _node_address(kind_name: str) -> Cell:
    def cell(node: Obj) -> str:
        for a in (node.get("status") or {}).get("addresses") or []:
            if a.get("type") == kind_name:
                return a.get("address", "")
        return "<none>"

    return cell


def _job_status(job: Obj) -> str:
    conds = {c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []}
    if conds.get("Complete") == "True":
        return "Complete"
    if conds.get("Failed") == "True":
        return "Failed"
    if job["metadata"].get("deletionTimestamp"):
        return "Terminating"
    if conds.get("Suspended") == "True" or (job.get("spec") or {}).get("suspend"):
        return "Suspended"
    return "Running"


def _job_completions(job: Obj) -> str:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    succeeded = status.get("succeeded") or 0
    if spec.get("completions") is not None:
        return f"{succeeded}/{spec['completions']}"
    parallelism = spec.get("parallelism") or 0
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def _job_duration(job: Obj) -> str:
    status = job.get("status") or {}
    start = _parse_time(status.get("startTime"))
    if start is None:
        return ""
    end = _parse_time(status.get("completionTime")) or datetime.now(UTC)
    return human_duration((end - start).total_seconds())


def _template_containers(field: str) -> Cell:
    def cell(obj: Obj) -> str:
        spec = _get(obj, "spec.template.spec") or {}
        return ",".join(str(c.get(field, "")) for c in spec.get("containers") or [])

    return cell


def _selector_text(obj: Obj) -> str:
    sel = _get(obj, "spec.selector") or {}
    if "matchLabels" in sel or "matchExpressions" in sel:
        parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
        for e in sel.get("matchExpressions") or []:
            parts.append(f"{e.get('key')} {e.get('operator', '').lower()} ({','.join(e.get('values') or [])})")
        return ",".join(parts) or "<none>"
    return ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>"


def _service_ports(svc: Obj) -> str:
    parts = []
    for p in _get(svc, "spec.ports") or []:
        text = f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort"):
            text = f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        parts.append(text)
    return ",".join(parts) or "<none>"


def _event_object(ev: Obj) -> str:
    inv = ev.get("involvedObject") or ev.get("regarding") or {}
    return f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}"


def _event_last_seen(ev: Obj) -> str:
    stamp = ev.get("lastTimestamp") or ev.get("deprecatedLastTimestamp") or _get(ev, "series.lastObservedTime")
    stamp = stamp or ev.get("eventTime")
    stamp = stamp or _get(ev, "metadata.creationTimestamp")
    return age(str(stamp)[:19] + "Z" if stamp else None)


def _count(field: str) -> Cell:
    return lambda obj: len(obj.get(field) or {})


_CONDITION_RE = re.compile(r"^(\.[\w.]+)\[\?\(@\.(\w+)==['\"]([^'\"]+)['\"]\)\]\.(\w+)$")


def json_path(expr: str) -> Cell:
    """The two JSONPath shapes CRD printer columns use: `.a.b` and `.a[?(@.k=='v')].f`."""
    m = _CONDITION_RE.match(expr)
    if m:
        base, key, value, field = m.groups()

        def select(obj: Obj) -> Any:
            for item in _get(obj, base[1:]) or []:
                if isinstance(item, dict) and item.get(key) == value:
                    return item.get(field)
            return None

        return select
    return lambda obj: _get(obj, expr[1:])


# name, type, cell, priority (1 = only with -o wide), format
Column = tuple[str, str, Cell, int, str]


def _col(name: str, cell: Cell, priority: int = 0, type_: str = "string", fmt: str = "") -> Column:
    return (name, type_, cell, priority, fmt)


NAME: Column = ("Name", "string", _name, 0, "name")
AGE: Column = _col("Age", _age_cell)

COLUMNS: dict[Kind, list[Column]] = {
    kinds.POD: [
        NAME,
        _col("Ready", _pod_ready),
        _col("Status", pod_status_reason),
        _col("Restarts", _pod_restarts),
        AGE,
        _col("IP", lambda p: _get(p, "status.podIP") or "<none>", 1),
        _col("Node", lambda p: _get(p, "spec.nodeName") or "<none>", 1),
        _col("Nominated Node", lambda p: _get(p, "status.nominatedNodeName") or "<none>", 1),
        _col("Readiness Gates", _ready_gates, 1),
    ],
    kinds.NODE: [
        NAME,
        _col("Status", _node_status),
        _col("Roles", _node_roles),
        AGE,
        _col("Version", lambda n: _get(n, "status.nodeInfo.kubeletVersion") or ""),
        _col("Internal-IP", _node_address("InternalIP"), 1),
        _col("External-IP", _node_address("ExternalIP"), 1),
        _col("OS-Image", lambda n: _get(n, "status.nodeInfo.osImage") or "", 1),
        _col("Kernel-Version", lambda n: _get(n, "status.nodeInfo.kernelVersion") or "", 1),
        _col("Container-Runtime", lambda n: _get(n, "status.nodeInfo.containerRuntimeVersion") or "", 1),
    ],
    kinds.NAMESPACE: [NAME, _col("Status", lambda n: _get(n, "status.phase") or ""), AGE],
    kinds.JOB: [
        NAME,
        _col("Status", _job_status),
        _col("Completions", _job_completions),
        _col("Duration", _job_duration),
        AGE,
        _col("Containers", _template_containers("name"), 1),
        _col("Images", _template_containers("image"), 1),
        _col("Selector", _selector_text, 1),
    ],
    kinds.SERVICE: [
        NAME,
        _col("Type", lambda s: _get(s, "spec.type") or "ClusterIP"),
        _col("Cluster-IP", lambda s: _get(s, "spec.clusterIP") or "<none>"),
        _col("External-IP", lambda s: ",".join(_get(s, "spec.externalIPs") or []) or "<none>"),
        _col("Port(s)", _service_ports),
        AGE,
        _col(
            "Selector",
            lambda s: ",".join(f"{k}={v}" for k, v in (_get(s, "spec.selector") or {}).items()) or "<none>",
            1,
        ),
    ],
    kinds.EVENT: [
        _col("Last Seen", _event_last_seen),
        _col("Type", lambda e: e.get("type") or ""),
        _col("Reason", lambda e: e.get("reason") or ""),
        _col("Object", _event_object),
        _col("Message", lambda e: (e.get("message") or e.get("note") or "").strip()),
        ("Name", "string", _name, 1, "name"),
    ],
    kinds.CONFIGMAP: [
        NAME,
        _col("Data", lambda c: len(c.get("data") or {}) + len(c.get("binaryData") or {}), type_="integer"),
        AGE,
    ],
    kinds.SECRET: [
        NAME,
        _col("Type", lambda s: s.get("type") or ""),
        _col("Data", _count("data"), type_="integer"),
        AGE,
    ],
    kinds.SERVICEACCOUNT: [NAME, _col("Secrets", lambda s: len(s.get("secrets") or []), type_="integer"), AGE],
    kinds.PVC: [
        NAME,
        _col("Status", lambda p: _get(p, "status.phase") or ""),
        _col("Volume", lambda p: _get(p, "spec.volumeName") or ""),
        _col("Capacity", lambda p: _get(p, "status.capacity.storage") or ""),
        _col("Access Modes", lambda p: ",".join(_short_modes(_get(p, "status.accessModes") or []))),
        _col("StorageClass", lambda p: _get(p, "spec.storageClassName") or "<unset>"),
        AGE,
    ],
    kinds.PV: [
        NAME,
        _col("Capacity", lambda p: _get(p, "spec.capacity.storage") or ""),
        _col("Access Modes", lambda p: ",".join(_short_modes(_get(p, "spec.accessModes") or []))),
        _col("Reclaim Policy", lambda p: _get(p, "spec.persistentVolumeReclaimPolicy") or ""),
        _col("Status", lambda p: _get(p, "status.phase") or ""),
        _col(
            "Claim",
            lambda p: "/".join(x for x in (_get(p, "spec.claimRef.namespace"), _get(p, "spec.claimRef.name")) if x),
        ),
        _col("StorageClass", lambda p: _get(p, "spec.storageClassName") or ""),
        AGE,
    ],
    # Kueue: the additionalPrinterColumns of the v0.19.2 CRDs (plus Age, which every CRD table ends with).
    kinds.CLUSTERQUEUE: [
        NAME,
        _col("Cohort", json_path(".spec.cohortName")),
        _col("Strategy", json_path(".spec.queueingStrategy"), 1),
        _col("Pending Workloads", json_path(".status.pendingWorkloads"), type_="integer"),
        _col("Admitted Workloads", json_path(".status.admittedWorkloads"), 1, "integer"),
        AGE,
    ],
    kinds.LOCALQUEUE: [
        NAME,
        _col("ClusterQueue", json_path(".spec.clusterQueue")),
        _col("Pending Workloads", json_path(".status.pendingWorkloads"), type_="integer"),
        _col("Admitted Workloads", json_path(".status.admittedWorkloads"), type_="integer"),
        AGE,
    ],
    kinds.WORKLOAD: [
        NAME,
        _col("Queue", json_path(".spec.queueName")),
        _col("Reserved in", json_path(".status.admission.clusterQueue")),
        _col("Admitted", json_path(".status.conditions[?(@.type=='Admitted')].status")),
        _col("Finished", json_path(".status.conditions[?(@.type=='Finished')].status")),
        AGE,
    ],
    kinds.WORKLOADPRIORITYCLASS: [NAME, _col("Value", json_path(".value"), type_="integer"), AGE],
    kinds.COHORT: [NAME, _col("Parent", json_path(".spec.parentName")), AGE],
}
COLUMNS[kinds.EVENT_V1] = COLUMNS[kinds.EVENT]


def _short_modes(modes: list[str]) -> list[str]:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return [short.get(m, m) for m in modes]


def columns_for(kind: Kind) -> list[Column]:
    return COLUMNS.get(kind, [NAME, AGE])


def _cell_value(value: Any) -> Any:
    # Tables carry JSON scalars; kubectl prints <none> for absent values.
    if value is None:
        return "<none>"
    return value


def row(kind: Kind, obj: Obj, include_object: str) -> Obj:
    cells = [_cell_value(col[2](obj)) for col in columns_for(kind)]
    out: Obj = {"cells": cells}
    if include_object == "Object":
        out["object"] = obj
    elif include_object != "None":
        out["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {},
        }
    return out


def table(
    kind: Kind,
    objects: list[Obj],
    resource_version: str,
    include_object: str = "Metadata",
    *,
    headers: bool = True,
    continue_token: str | None = None,
) -> Obj:
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    out: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
    if headers:
        out["columnDefinitions"] = [
            {"name": name, "type": type_, "format": fmt, "description": name, "priority": priority}
            for name, type_, _, priority, fmt in columns_for(kind)
        ]
    else:
        out["columnDefinitions"] = None
    out["rows"] = [row(kind, obj, include_object) for obj in objects]
    return out


def wants_table(accept: str) -> bool:
    """Whether the client asked for a Table first (kubectl sends Table, then plain JSON as a fallback)."""
    first = accept.split(",")[0]
    return "as=Table" in first and "g=meta.k8s.io" in first


def wants_metadata_only(accept: str) -> bool:
    """`as=PartialObjectMetadata[List]`: what client-go's metadata client (e.g. the garbage collector) asks for."""
    first = accept.split(",")[0]
    return "as=PartialObjectMetadata" in first and "g=meta.k8s.io" in first


def partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}
