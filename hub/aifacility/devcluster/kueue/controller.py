"""The development cluster's Kueue: a level-triggered admission loop over the store.

Every change to a queue-labelled Pod or Job, a Workload or a queue object marks the loop dirty; a pass then
recomputes everything from the store (the store is small and passes are cheap) and writes only what changed,
so its own writes end in a quiet pass. One pass:
  1. creates a Workload for each queue-labelled Pod/Job that has none (owned by it), deletes Workloads whose
     owner is gone, and marks Workloads Finished when their Pod/Job finished (their quota is released);
  2. admits pending Workloads per cohort in queue order (priority, then creation), first those that fit their
     ClusterQueue's nominal quota, then those that must borrow; BestEffortFIFO skips a head that does not fit,
     StrictFIFO stops at it;
  3. on admission writes `status.admission` and QuotaReserved/Admitted, then ungates the Pod (or unsuspends
     the Job) and injects the flavors' nodeLabels and tolerations;
  4. writes ClusterQueue and LocalQueue status.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
from decimal import Decimal
from typing import Any

from aifacility.devcluster.kinds import (
    CLUSTERQUEUE,
    JOB,
    LOCALQUEUE,
    NAMESPACE,
    POD,
    RESOURCEFLAVOR,
    WORKLOAD,
    WORKLOADPRIORITYCLASS,
    Kind,
    by_kind,
)
from aifacility.devcluster.kueue import workloads as wls
from aifacility.devcluster.kueue.assign import Assignment, assign
from aifacility.devcluster.kueue.quota import Cluster, QueueSpec, Usage, format_quantity
from aifacility.devcluster.kueue.schema import apply_defaults, crd_schema, prune
from aifacility.devcluster.kueue.webhook import (
    ADMISSION_GATE,
    MANAGED_LABEL,
    PRIORITY_CLASS_LABEL,
    QUEUE_LABEL,
    kueue_hook,
)
from aifacility.devcluster.kueue.workloads import SEQUENCE_ANNOTATION
from aifacility.devcluster.store import AlreadyExists, NotFound, Store, StoreError
from aifacility.facility.model import Facility
from aifacility.facility.quantity import parse_quantity
from aifacility.kueue.render import render

log = logging.getLogger(__name__)
Obj = dict[str, Any]
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


def apply_rendered(store: Store, facility: Facility) -> None:
    """Create the facility's flavors and queues, or bring their spec back to what the facility file says.

    Like `helm upgrade` in production: the facility file is the single source of truth for these objects.
    """
    for obj in render(facility):
        kind = by_kind(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        try:
            store.create(kind, obj)
        except AlreadyExists:
            current = store.get(kind, meta.get("namespace"), meta["name"])
            wanted = copy.deepcopy(obj)
            wanted["metadata"] = {**current["metadata"], "labels": {**(current["metadata"].get("labels") or {}),
                                                                    **meta.get("labels", {})}}
            # Defaulted as the stored object was, so that an unchanged facility file writes nothing.
            schema = crd_schema(kind.plural)
            prune(schema, wanted)
            apply_defaults(schema, wanted)
            store.update(kind, wanted)


def workload_name(kind: str, name: str, uid: str) -> str:
    """Kueue's naming: `<kind>-<owner name>-<5 hex of a hash>`, short enough for a DNS subdomain."""
    digest = hashlib.sha256(f"{kind}/{name}/{uid}".encode()).hexdigest()[:5]
    return f"{kind.lower()}-{name[:240]}-{digest}"


def _uid(obj: Obj) -> str:
    return str(obj["metadata"]["uid"])


def _owner_uid(wl: Obj) -> str | None:
    for ref in wl["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _job_finished(job: Obj) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            return "Succeeded" if c["type"] == "Complete" else "Failed"
    return None


def _pod_finished(pod: Obj) -> str | None:
    phase = (pod.get("status") or {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def _template_spec(spec: Obj) -> Obj:
    out = {k: v for k, v in spec.items() if k not in ("nodeName", "schedulingGates")}
    return out


class KueueController:
    """The admission loop as a DevCluster controller (`await start(cluster)`, `await stop()`)."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: list[Any] = []
        self._busy = False
        self.passes = 0

    # ---- lifecycle ------------------------------------------------------------------------------------------------

    def install(self, store: Store) -> None:
        """Register the webhook; call before anything creates queue-labelled Pods or Jobs."""
        self.store = store
        if kueue_hook not in getattr(store, "hooks", ()):
            store.add_hook(kueue_hook)

    async def start(self, cluster: Any = None) -> None:
        """Start the loop; with a DevCluster, first apply the Kueue objects rendered from its facility file."""
        if self.store is None:
            self.install(cluster.store)
        assert self.store is not None
        facility = getattr(cluster, "facility", None)
        if facility is not None:
            apply_rendered(self.store, facility)
        watched: list[tuple[Kind, str | None]] = [
            (POD, f"{MANAGED_LABEL}=true"), (JOB, QUEUE_LABEL), (WORKLOAD, None), (CLUSTERQUEUE, None),
            (LOCALQUEUE, None), (RESOURCEFLAVOR, None), (WORKLOADPRIORITYCLASS, None), (NAMESPACE, None),
        ]
        for kind, selector in watched:
            self._tasks.append(asyncio.create_task(self._follow(kind, selector), name=f"kueue-watch-{kind.plural}"))
        self._tasks.append(asyncio.create_task(self._run(), name="kueue-admission"))
        self._dirty.set()

    async def stop(self) -> None:
        for w in list(self._watchers):
            w.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        self._watchers.clear()

    async def _follow(self, kind: Kind, selector: str | None) -> None:
        assert self.store is not None
        while True:
            watcher = self.store.watch(kind, label_selector=selector)
            self._watchers.append(watcher)
            try:
                async for _event in watcher:
                    self._dirty.set()
            except StoreError as e:
                # Fell behind the watch history (410 Gone): watch again; the pass re-reads everything anyway.
                log.info("kueue: re-watching %s after %s", kind.plural, e)
            finally:
                watcher.close()
                self._watchers.remove(watcher)
            self._dirty.set()
            await asyncio.sleep(0.1)

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._busy = True
            self._dirty.clear()
            await asyncio.sleep(0)  # let a burst of events coalesce into one pass
            try:
                self.reconcile()
            except Exception:
                # One bad object must not stop admission for everyone; the next change retries.
                log.exception("kueue admission pass failed")
            finally:
                self._busy = False

    async def settle(self, within_seconds: float = 5.0) -> None:
        """Wait until a pass has run with nothing left to do (for tests and `aifacility up`)."""
        async with asyncio.timeout(within_seconds):
            while True:
                await asyncio.sleep(0.01)
                if not self._dirty.is_set() and not self._busy:
                    await asyncio.sleep(0.02)  # the watch tasks report the last pass's own writes
                    if not self._dirty.is_set() and not self._busy:
                        return

    # ---- one pass -----------------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        store = self.store
        assert store is not None
        self.passes += 1
        self._sync_owners(store)
        workloads, _ = store.list(WORKLOAD)
        cqs, _ = store.list(CLUSTERQUEUE)
        lqs, _ = store.list(LOCALQUEUE)
        flavors = {f["metadata"]["name"]: f for f in store.list(RESOURCEFLAVOR)[0]}
        namespaces = {n["metadata"]["name"]: n for n in store.list(NAMESPACE)[0]}
        queues = wls.Queues(lqs, cqs)
        specs = {cq["metadata"]["name"]: QueueSpec.from_object(cq) for cq in cqs}
        missing = {name: [f for f in spec.flavor_names() if f not in flavors] for name, spec in specs.items()}
        usage = Usage()
        for wl in workloads:
            adm = (wl.get("status") or {}).get("admission") or {}
            if wls.has_quota(wl) and adm.get("clusterQueue") in specs:
                usage.add(adm["clusterQueue"], _amounts(adm))
        cluster = Cluster(specs.values(), usage)
        pending = sorted((wl for wl in workloads if wls.is_pending(wl)), key=wls.order_key)
        by_cohort: dict[str, list[tuple[Obj, str]]] = {}
        for wl in pending:
            problem = queues.problem(wl)
            cq_name = queues.cluster_queue_of(wl)
            if problem is None and cq_name is not None:
                if missing[cq_name]:
                    problem = f"ClusterQueue {cq_name} is inactive"
                elif not wls.namespace_selected(specs[cq_name].namespace_selector,
                                                namespaces.get(wl["metadata"]["namespace"])):
                    problem = f"Workload namespace doesn't match ClusterQueue selector of {cq_name}"
            if problem is not None or cq_name is None:
                self._pending(wl, "Inadmissible", problem or "no ClusterQueue")
                continue
            by_cohort.setdefault(specs[cq_name].cohort or f"\0{cq_name}", []).append((wl, cq_name))
        for candidates in by_cohort.values():
            self._admit_cohort(candidates, cluster, flavors)
        self._write_queue_status(cqs, lqs, missing, cluster)

    def _admit_cohort(self, candidates: list[tuple[Obj, str]], cluster: Cluster,
                      flavors: dict[str, Obj]) -> None:
        """Nominal-fitting workloads first, then borrowing ones, each pass in queue order."""
        done: set[str] = set()
        last: dict[str, Assignment] = {}
        for allow_borrow in (False, True):
            blocked: set[str] = set()  # StrictFIFO queues whose head did not fit in this pass
            for wl, cq_name in candidates:
                uid = _uid(wl)
                if uid in done or cq_name in blocked:
                    continue
                result = assign(wl, cq_name, cluster, flavors)
                last[uid] = result
                if result.fits and (allow_borrow or not result.borrows):
                    self._admit(wl, cq_name, result)
                    cluster.usage.add(cq_name, result.amounts())
                    done.add(uid)
                elif cluster.queues[cq_name].strategy == "StrictFIFO":
                    blocked.add(cq_name)
        for wl, cq_name in candidates:
            uid = _uid(wl)
            if uid in done:
                continue
            tried = last.get(uid)
            if tried is not None and tried.reasons:
                message = "couldn't assign flavors to pod set main: " + "; ".join(tried.reasons)
            else:  # never tried, or it fit but an older workload of its StrictFIFO queue did not
                message = f"waiting behind an older workload in ClusterQueue {cq_name} (StrictFIFO)"
            self._pending(wl, "Pending", message)

    # ---- owners (Pods, Jobs) ------------------------------------------------------------------------------------

    def _sync_owners(self, store: Store) -> None:
        pods, _ = store.list(POD, label_selector=f"{MANAGED_LABEL}=true,{QUEUE_LABEL}")
        jobs, _ = store.list(JOB, label_selector=QUEUE_LABEL)
        workloads, _ = store.list(WORKLOAD)
        owners = {_uid(o): (POD, o) for o in pods} | {_uid(o): (JOB, o) for o in jobs}
        by_owner = {}
        for wl in workloads:
            owner = _owner_uid(wl)
            refs = wl["metadata"].get("ownerReferences") or []
            if owner is None:
                continue
            if owner not in owners and any(r.get("kind") in ("Pod", "Job") for r in refs):
                # The owner is gone: its Workload goes too (what the garbage collector would do).
                with contextlib.suppress(NotFound):
                    store.delete(WORKLOAD, wl["metadata"]["namespace"], wl["metadata"]["name"])
                continue
            by_owner[owner] = wl
        ordered = sorted(owners.values(), key=lambda ko: (ko[1]["metadata"]["creationTimestamp"],
                                                           int(ko[1]["metadata"]["resourceVersion"])))
        for kind, obj in ordered:
            owned = by_owner.get(_uid(obj))
            finished = _pod_finished(obj) if kind is POD else _job_finished(obj)
            if owned is None:
                if finished is None and not obj["metadata"].get("deletionTimestamp"):
                    self._create_workload(store, kind, obj)
            elif finished is not None and not wls.is_true(owned, "Finished"):
                self._finish(owned, finished)

    def _priority(self, obj: Obj, spec: Obj) -> tuple[int, Obj | None]:
        store = self.store
        assert store is not None
        name = (obj["metadata"].get("labels") or {}).get(PRIORITY_CLASS_LABEL)
        if name:
            try:
                wpc = store.get(WORKLOADPRIORITYCLASS, None, name)
            except NotFound:
                return int(spec.get("priority") or 0), None
            ref = {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": name}
            return int(wpc.get("value") or 0), ref
        return int(spec.get("priority") or 0), None

    def _create_workload(self, store: Store, kind: Kind, obj: Obj) -> None:
        meta = obj["metadata"]
        if kind is POD:
            pod_spec, count = obj.get("spec") or {}, 1
            template_meta = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
        else:
            template = (obj.get("spec") or {}).get("template") or {}
            pod_spec = template.get("spec") or {}
            count = int((obj.get("spec") or {}).get("parallelism", 1) or 1)
            tmeta = template.get("metadata") or {}
            template_meta = {k: tmeta[k] for k in ("labels", "annotations") if tmeta.get(k)}
        prio, ref = self._priority(obj, pod_spec)
        spec: Obj = {
            "queueName": meta["labels"][QUEUE_LABEL],
            "priority": prio,
            "podSets": [{"name": "main", "count": count,
                         "template": {"metadata": template_meta, "spec": _template_spec(pod_spec)}}],
        }
        if ref:
            spec["priorityClassRef"] = ref
        wl = {
            "apiVersion": WORKLOAD.api_version, "kind": "Workload",
            "metadata": {
                "name": workload_name(kind.kind, meta["name"], meta["uid"]),
                "namespace": meta["namespace"],
                "labels": {JOB_UID_LABEL: meta["uid"]},
                "annotations": {SEQUENCE_ANNOTATION: str(store.resource_version)},
                "ownerReferences": [{"apiVersion": kind.api_version, "kind": kind.kind, "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": spec,
        }
        try:
            store.create(WORKLOAD, wl)
        except AlreadyExists:
            pass
        except StoreError as e:
            log.warning("cannot create a Workload for %s %s/%s: %s", kind.kind, meta["namespace"], meta["name"], e)

    def _finish(self, wl: Obj, reason: str) -> None:
        message = "Job finished successfully" if reason == "Succeeded" else "Job failed"
        self._modify_status(wl, lambda st: wls.set_condition(st, "Finished", "True", reason, message))

    # ---- workload status ----------------------------------------------------------------------------------------

    def _modify_status(self, wl: Obj, fn: Any) -> None:
        store = self.store
        assert store is not None
        current_status = dict(wl.get("status") or {})
        status = copy.deepcopy(current_status)
        if not fn(status):
            return

        def apply(obj: Obj) -> None:
            obj["status"] = status

        with contextlib.suppress(NotFound):
            store.modify(WORKLOAD, wl["metadata"]["namespace"], wl["metadata"]["name"], apply, subresource="status")

    def _pending(self, wl: Obj, reason: str, message: str) -> None:
        self._modify_status(wl, lambda st: wls.set_condition(st, "QuotaReserved", "False", reason, message))

    def _admit(self, wl: Obj, cq_name: str, result: Assignment) -> None:
        admission = {"clusterQueue": cq_name, "podSetAssignments": [ps.to_status() for ps in result.podsets]}

        def update(st: Obj) -> bool:
            st["admission"] = admission
            wls.set_condition(st, "QuotaReserved", "True", "QuotaReserved", f"Quota reserved in ClusterQueue {cq_name}")
            wls.set_condition(st, "Admitted", "True", "Admitted", "The workload is admitted")
            return True

        self._modify_status(wl, update)
        self._start_owner(wl, result)

    def _start_owner(self, wl: Obj, result: Assignment) -> None:
        """Ungate the Pod / unsuspend the Job, with the assigned flavors' nodeLabels and tolerations."""
        store = self.store
        assert store is not None
        flavor_names = {f for ps in result.podsets for f in ps.flavors.values()}
        node_labels: dict[str, str] = {}
        tolerations: list[Obj] = []
        for name in sorted(flavor_names):
            with contextlib.suppress(NotFound):
                fspec = store.get(RESOURCEFLAVOR, None, name).get("spec") or {}
                node_labels.update(fspec.get("nodeLabels") or {})
                for t in fspec.get("tolerations") or []:
                    if t not in tolerations:
                        tolerations.append(t)

        def inject(spec: Obj) -> None:
            if node_labels:
                spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **node_labels}
            if tolerations:
                existing = spec.setdefault("tolerations", [])
                existing += [t for t in tolerations if t not in existing]

        for ref in wl["metadata"].get("ownerReferences") or []:
            if not ref.get("controller"):
                continue
            kind = by_kind(ref["apiVersion"], ref["kind"])
            ns = wl["metadata"]["namespace"]

            def start_pod(pod: Obj) -> None:
                spec = pod.setdefault("spec", {})
                gates = spec.get("schedulingGates") or []
                spec["schedulingGates"] = [g for g in gates if g.get("name") != ADMISSION_GATE]
                if not spec["schedulingGates"]:
                    del spec["schedulingGates"]
                inject(spec)

            def start_job(job: Obj) -> None:
                job["spec"]["suspend"] = False
                inject(job["spec"].setdefault("template", {}).setdefault("spec", {}))

            try:
                store.modify(kind, ns, ref["name"], start_pod if kind is POD else start_job)
            except StoreError as e:
                log.warning("cannot start %s %s/%s after admission: %s", ref["kind"], ns, ref["name"], e)

    # ---- queue status ---------------------------------------------------------------------------------------------

    def _write_queue_status(self, cqs: list[Obj], lqs: list[Obj], missing: dict[str, list[str]],
                            cluster: Cluster) -> None:
        store = self.store
        assert store is not None
        workloads, _ = store.list(WORKLOAD)
        queues = wls.Queues(lqs, cqs)
        counts: dict[str, dict[str, int]] = {}
        lq_counts: dict[tuple[str, str], dict[str, int]] = {}
        lq_usage: dict[tuple[str, str], dict[tuple[str, str], Decimal]] = {}
        for wl in workloads:
            if wls.is_true(wl, "Finished"):
                continue
            key = (wl["metadata"]["namespace"], (wl.get("spec") or {}).get("queueName") or "")
            adm = (wl.get("status") or {}).get("admission") or {}
            cq = adm.get("clusterQueue") if wls.has_quota(wl) else queues.cluster_queue_of(wl)
            state = "reserving" if wls.has_quota(wl) else "pending"
            for bucket in ([counts.setdefault(cq, {})] if cq else []) + [lq_counts.setdefault(key, {})]:
                bucket[state] = bucket.get(state, 0) + 1
            if state == "reserving":
                for fr, amount in _amounts(adm).items():
                    u = lq_usage.setdefault(key, {})
                    u[fr] = u.get(fr, Decimal(0)) + amount
        for cq in cqs:
            name = cq["metadata"]["name"]
            spec = cluster.queues[name]
            usage = [{"name": f.name, "resources": [
                {"name": r, "total": format_quantity(cluster.usage.of(name, (f.name, r))),
                 "borrowed": format_quantity(cluster.borrowed(name, (f.name, r)))} for r in f.resources]}
                for g in spec.groups for f in g.flavors]
            c = counts.get(name, {})
            if missing[name]:
                active = ("False", "FlavorNotFound", "Can't admit new workloads: references missing "
                          f"ResourceFlavor(s): {', '.join(missing[name])}")
            else:
                active = ("True", "Ready", "Can admit new workloads")
            self._set_queue_status(CLUSTERQUEUE, None, name, c, usage, active, cq.get("status") or {})
        for lq in lqs:
            ns, name = lq["metadata"]["namespace"], lq["metadata"]["name"]
            cq_name = (lq.get("spec") or {}).get("clusterQueue")
            c = lq_counts.get((ns, name), {})
            lu = lq_usage.get((ns, name), {})
            usage = []
            if cq_name in cluster.queues:
                usage = [{"name": f.name, "resources": [
                    {"name": r, "total": format_quantity(lu.get((f.name, r), Decimal(0)))} for r in f.resources]}
                    for g in cluster.queues[cq_name].groups for f in g.flavors]
            if cq_name not in cluster.queues:
                active = ("False", "ClusterQueueDoesNotExist", "Can't submit new workloads to clusterQueue")
            elif missing[cq_name]:
                active = ("False", "ClusterQueueIsInactive", "Can't submit new workloads to clusterQueue")
            else:
                active = ("True", "Ready", "Can submit new workloads to localQueue")
            self._set_queue_status(LOCALQUEUE, ns, name, c, usage, active, lq.get("status") or {})

    def _set_queue_status(self, kind: Kind, ns: str | None, name: str, counts: dict[str, int],
                          usage: list[Obj], active: tuple[str, str, str], old: Obj) -> None:
        status = copy.deepcopy(old)
        status.update(pendingWorkloads=counts.get("pending", 0), reservingWorkloads=counts.get("reserving", 0),
                      admittedWorkloads=counts.get("reserving", 0), flavorsReservation=usage,
                      flavorsUsage=copy.deepcopy(usage))
        wls.set_condition(status, "Active", *active)
        if status == old:
            return

        def apply(obj: Obj) -> None:
            obj["status"] = status

        assert self.store is not None
        with contextlib.suppress(NotFound):
            self.store.modify(kind, ns, name, apply, subresource="status")


def _amounts(admission: Obj) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for ps in admission.get("podSetAssignments") or []:
        for resource, q in (ps.get("resourceUsage") or {}).items():
            flavor = (ps.get("flavors") or {}).get(resource)
            if flavor:
                fr = (flavor, resource)
                out[fr] = out.get(fr, Decimal(0)) + parse_quantity(q)
    return out

