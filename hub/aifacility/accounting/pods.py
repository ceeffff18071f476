"""Usage records from the cluster's pods: notebook sessions, jobs, Dask workers, and jobs offloaded to interLink
virtual nodes (a pod on a node whose `aifacility.io/site` is not `local`), except at sites whose own batch
accounting is read instead (`accounting.batch_accounted_sites`, see accounting/sacct.py).

One record per pod and resource, with the id `pod:<uid>/<resource>`, from the moment the pod's quota was held to
its end. A pod that Kueue admitted (a job, a queued session) holds its group's quota from the admission: its
record starts then (the workload's `QuotaReserved` time, or the pod's creation if that came later, as for a Job's
pods, created once their Job is admitted); any other pod's starts with its first container. CPU cores and memory
(GiB) as the pod requests them (what the scheduler holds for it), and its GPUs, MIG slices or FPGAs. `user` and
`group` come from the pod's labels, set when it was created (so a later change of membership does not move its
usage).

Each sweep lists the pods and loads what it sees (exactly once, by id): a running pod gives an open record, an
ended pod (Succeeded/Failed) a closed one, ending when its last container finished. A pod that vanished (deleted)
while its record was open is closed at the collector's watermark: the last sweep that saw it. So a collector
killed and restarted counts nothing twice and loses only what ended while it was down, which it closes at the
last moment it knew the pod was running.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from aifacility.accounting.dcgm import DcgmError, Sample
from aifacility.accounting.ledger import IngestResult, Ledger
from aifacility.accounting.record import UsageRecord
from aifacility.facility.model import Facility
from aifacility.facility.quantity import parse_quantity
from aifacility.kueue.api import JOB_UID_LABEL, KUEUE_GROUP, KUEUE_VERSION

PREFIX = "pod:"
SITE_LABEL = "aifacility.io/site"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
USER_LABELS = ("aifacility.io/user", "hub.jupyter.org/username")
GROUP_LABELS = ("aifacility.io/group", "kueue.x-k8s.io/queue-name")
_MIG = re.compile(r"^nvidia\.com/mig-(.+)$")
GIB = 2**30

Pod = Mapping[str, Any]


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _kind(labels: Mapping[str, str], site: str) -> str:
    if site != "local":
        return "offload"
    if "aifacility.io/dask-role" in labels:
        return "dask"
    if labels.get("component") == "singleuser-server":
        return "notebook"
    return "job"


def _requests(pod: Pod) -> dict[str, float]:
    """The pod's effective requests, as the scheduler counts them: containers summed, init containers by max;
    a limit stands in for a missing request (extended resources have limits only)."""

    def of(c: Mapping[str, Any]) -> dict[str, float]:
        res = c.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {k: float(parse_quantity(str(v))) for k, v in merged.items()}

    spec = pod.get("spec") or {}
    total: dict[str, float] = {}
    for c in spec.get("containers") or []:
        for k, v in of(c).items():
            total[k] = total.get(k, 0.0) + v
    for c in spec.get("initContainers") or []:
        for k, v in of(c).items():
            total[k] = max(total.get(k, 0.0), v)
    return total


def admissions(workloads: list[dict[str, Any]]) -> dict[str, datetime]:
    """When Kueue reserved quota for each admitted workload, keyed by the uids of what it admits: its owner (a
    Job, a plain pod) and the `kueue.x-k8s.io/job-uid` label."""
    out: dict[str, datetime] = {}
    for wl in workloads:
        conds = {c.get("type"): c for c in (wl.get("status") or {}).get("conditions") or []}
        held = next((c for t in ("QuotaReserved", "Admitted") if (c := conds.get(t)) and c.get("status") == "True"),
                    None)
        when = _time(held.get("lastTransitionTime")) if held else None
        if when is None:
            continue
        meta = wl.get("metadata") or {}
        uids = [o.get("uid") for o in meta.get("ownerReferences") or []]
        uids.append((meta.get("labels") or {}).get(JOB_UID_LABEL))
        for uid in filter(None, uids):
            out[str(uid)] = when
    return out


def _admitted(pod: Pod, admitted: Mapping[str, datetime]) -> datetime | None:
    """When the pod's quota was held: its workload's admission, or the pod's creation if later."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = [meta.get("uid"), *(o.get("uid") for o in meta.get("ownerReferences") or []),
              labels.get("batch.kubernetes.io/controller-uid"), labels.get("controller-uid")]
    when = next((admitted[u] for u in owners if u and u in admitted), None)
    created = _time(meta.get("creationTimestamp"))
    return max(when, created) if when and created else when


def _span(pod: Pod) -> tuple[datetime | None, datetime | None]:
    """When the pod's containers ran: the earliest start and, once the pod ended, the latest finish."""
    status = pod.get("status") or {}
    starts, ends = [], []
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        for state in ((cs.get("state") or {}), (cs.get("lastState") or {})):
            if "running" in state:
                starts.append(_time(state["running"].get("startedAt")))
            if "terminated" in state:
                starts.append(_time(state["terminated"].get("startedAt")))
                ends.append(_time(state["terminated"].get("finishedAt")))
    start = min((s for s in starts if s), default=None)
    if status.get("phase") not in ("Succeeded", "Failed"):
        return start, None
    end = max((e for e in ends if e), default=None)
    return start, (end or start)


def pod_records(pod: Pod, nodes: Mapping[str, Mapping[str, str]], facility: Facility,
                admitted: Mapping[str, datetime] | None = None) -> list[UsageRecord]:
    """The usage records of one pod (none before any container started, or without a user label). `admitted`:
    see `admissions`."""
    meta = pod.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    user = next((labels[k] for k in USER_LABELS if labels.get(k)), None)
    start, end = _span(pod)
    if user is None or start is None:
        return []
    held = _admitted(pod, admitted or {})
    if held is not None and held < start:
        start = held
    group = next((labels[k] for k in GROUP_LABELS if labels.get(k)), "unassigned")
    node_labels = nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""), {})
    site = node_labels.get(SITE_LABEL, "local")
    if site in facility.accounting.batch_accounted_sites:
        return []  # the site's own accounting records it (accounting/sacct.py)
    by_resource = {a.resource: a for a in facility.accelerators}
    common = {"user": user, "group": group, "kind": _kind(labels, site), "start": start, "end": end, "site": site}
    out: list[dict[str, Any]] = []
    for name, amount in _requests(pod).items():
        if amount <= 0:
            continue
        if name == "cpu":
            out.append({"resource": "cpu", "quantity": amount})
        elif name == "memory":
            out.append({"resource": "memory", "quantity": amount / GIB})
        elif (m := _MIG.match(name)) is not None:
            out.append({"resource": "mig", "model": m.group(1), "quantity": amount})
        elif name in by_resource:
            acc = by_resource[name]
            kind = "fpga" if acc.kind == "fpga" else "gpu"
            model = node_labels.get(GPU_PRODUCT_LABEL) or acc.node_selector.get(GPU_PRODUCT_LABEL) or acc.name
            out.append({"resource": kind, "model": model if kind == "gpu" else acc.name, "quantity": amount})
    records = []
    for r in out:
        try:
            records.append(UsageRecord.model_validate({"id": f"{PREFIX}{meta['uid']}/{r['resource']}", **common,
                                                       **r}))
        except ValidationError:
            continue  # a label the ledger cannot hold (e.g. too long): not this collector's to invent a value
    return records


class PodCollector:
    """Sweeps the pods of `namespaces` into the ledger. `list_pods` and `list_nodes` return the API's objects
    as JSON-style dicts (see `kube_readers`)."""

    name = "pods"

    def __init__(self, ledger: Ledger, facility: Facility, list_pods: Callable[[], list[dict[str, Any]]],
                 list_nodes: Callable[[], list[dict[str, Any]]],
                 list_workloads: Callable[[], list[dict[str, Any]]] = list,
                 read_energy: Callable[[], list[Sample]] | None = None) -> None:
        self.ledger = ledger
        self.facility = facility
        self.list_pods = list_pods
        self.list_nodes = list_nodes
        self.list_workloads = list_workloads
        self.read_energy = read_energy  # DCGM's GPU energy counters, where the site has them (dcgm.py)

    def sweep(self, now: float | None = None) -> IngestResult:
        seen_at = time.time() if now is None else now
        nodes = {str(n["metadata"]["name"]): dict(n["metadata"].get("labels") or {}) for n in self.list_nodes()}
        admitted = admissions(self.list_workloads())
        pods = self.list_pods()
        records = [r for p in pods for r in pod_records(p, nodes, self.facility, admitted)]
        result = self.ledger.ingest(records)
        alive = {f"{PREFIX}{p['metadata']['uid']}/" for p in pods}
        vanished = [i for i in self.ledger.open_ids(PREFIX) if i[:i.rindex("/") + 1] not in alive]
        if vanished:
            last_seen = self.ledger.watermark(self.name)
            result.closed += self.ledger.close_records(vanished, last_seen if last_seen is not None else seen_at)
        self.ledger.set_watermark(self.name, seen_at)
        if self.read_energy is not None:
            self._measure(self.read_energy, pods, records)
        return result

    def _measure(self, read_energy: Callable[[], list[Sample]], pods: list[dict[str, Any]],
                 records: list[UsageRecord]) -> None:
        """Add DCGM's energy counters to the GPU records of the pods holding the GPUs. An exporter that
        cannot be read costs its measurements until it is back (the estimate stands for them), never the sweep."""
        # The GPU records of the pods listed now: a pod that just ended still held its GPU since the last sample
        # (the exporter maps a GPU to a pod only while the pod holds it).
        held = {r.id for r in records if r.resource == "gpu"}
        uids = {(str(p["metadata"].get("namespace", "")), str(p["metadata"]["name"])): str(p["metadata"]["uid"])
                for p in pods}
        try:
            samples = read_energy()
        except DcgmError as exc:
            print(f"aifacility: {exc}", file=sys.stderr, flush=True)
            return
        mine = []
        for s in samples:
            uid = uids.get((s.namespace, s.pod))
            if uid is not None and f"{PREFIX}{uid}/gpu" in held:
                mine.append((f"{PREFIX}{uid}/gpu", s.device, s.millijoules))
        self.ledger.add_measured_energy(mine)


Reader = Callable[[], list[dict[str, Any]]]


def kube_readers(kubeconfig: str | None, namespaces: list[str]) -> tuple[Reader, Reader, Reader]:
    """list_pods, list_nodes and list_workloads (Kueue's) over the Kubernetes API (the kubeconfig, else the
    in-cluster service account)."""
    from kubernetes import client, config

    if kubeconfig:
        api_client = config.new_client_from_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
        api_client = client.ApiClient()
    core = client.CoreV1Api(api_client)

    def pods() -> list[dict[str, Any]]:
        items = []
        for ns in namespaces:
            items += core.list_namespaced_pod(ns, _request_timeout=30).items
        return [api_client.sanitize_for_serialization(p) for p in items]

    def nodes() -> list[dict[str, Any]]:
        return [api_client.sanitize_for_serialization(n) for n in core.list_node(_request_timeout=30).items]

    custom = client.CustomObjectsApi(api_client)

    def workloads() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for ns in namespaces:
            try:
                body: dict[str, Any] = custom.list_namespaced_custom_object(  # type: ignore[assignment]
                    KUEUE_GROUP, KUEUE_VERSION, ns, "workloads", _request_timeout=30)
                items += body.get("items") or []
            except client.ApiException as exc:
                if exc.status not in (403, 404):  # no Kueue, or no right to read it: pods' own times
                    raise
        return items

    return pods, nodes, workloads

