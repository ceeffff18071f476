"""Kueue's webhooks in the development cluster, as one store admission hook.

* Kueue objects: pruned, defaulted and validated against their CRD (schema + CEL), and refused loudly when they
  use a feature this small Kueue does not emulate (rather than accepting it and behaving differently).
* Pods with `kueue.x-k8s.io/queue-name`: gated with `kueue.x-k8s.io/admission` and labelled managed at
  creation (the plain-pod integration); Jobs with the label are suspended at creation (batch/job integration).
"""

from __future__ import annotations

from typing import Any

from aifacility.devcluster.kinds import COHORT, JOB, POD, Kind
from aifacility.devcluster.kueue.schema import admit
from aifacility.devcluster.store import invalid

KUEUE_GROUP = "kueue.x-k8s.io"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_LABEL = "kueue.x-k8s.io/managed"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
NOT_EMULATED = "the development cluster's Kueue does not emulate"
UNMANAGED_NAMESPACES = ("kube-system", "kueue-system")

# Spec fields that would change admission if set to anything but these values. Each is refused by name.
_CQ_ONLY_DEFAULT = {
    "stopPolicy": "None",
    "preemption": {"borrowWithinCohort": {"policy": "Never"}, "reclaimWithinCohort": "Never",
                   "withinClusterQueue": "Never"},
    "flavorFungibility": {"whenCanBorrow": "MayStopSearch", "whenCanPreempt": "TryNextFlavor"},
}
_CQ_REFUSED = ("admissionChecksStrategy", "admissionScope", "fairSharing", "concurrentAdmissionPolicy")


def _differs(value: Any, default: Any) -> bool:
    """Whether `value` asks for more than the default (absent keys in `value` are the default)."""
    if isinstance(default, dict) and isinstance(value, dict):
        return any(k not in default or _differs(v, default[k]) for k, v in value.items())
    return value != default


def unsupported(kind: Kind, obj: dict[str, Any]) -> list[tuple[str, str]]:
    """The fields of a (defaulted) Kueue object that this Kueue does not emulate."""
    spec = obj.get("spec") or {}
    out: list[tuple[str, str]] = []

    def refuse(path: str, what: str) -> None:
        out.append((path, f"Forbidden: {NOT_EMULATED} {what}"))

    if kind.kind == "ClusterQueue":
        for key in _CQ_REFUSED:
            if spec.get(key) is not None:
                refuse(f"spec.{key}", key)
        for key, default in _CQ_ONLY_DEFAULT.items():
            if key in spec and _differs(spec[key], default):
                refuse(f"spec.{key}", f"{key} other than the default {default}")
    elif kind.kind == "LocalQueue":
        if spec.get("fairSharing") is not None:
            refuse("spec.fairSharing", "fairSharing (admission fair sharing)")
        if spec.get("stopPolicy", "None") != "None":
            refuse("spec.stopPolicy", "stopPolicy other than None")
    elif kind.kind == "ResourceFlavor":
        if spec.get("topologyName"):
            refuse("spec.topologyName", "topologyName (topology-aware scheduling)")
    elif kind.kind == "Workload":
        for key in ("maximumExecutionTimeSeconds", "preemptionGates"):
            if spec.get(key) is not None:
                refuse(f"spec.{key}", key)
        if spec.get("active") is False:
            refuse("spec.active", "deactivating a Workload (active: false)")
        for i, ps in enumerate(spec.get("podSets") or []):
            for key in ("minCount", "topologyRequest"):
                if ps.get(key) is not None:
                    refuse(f"spec.podSets[{i}].{key}",
                           "partial admission (minCount)" if key == "minCount" else "topologyRequest")
    return out


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _mutate_pod(pod: dict[str, Any]) -> None:
    labels = pod["metadata"].setdefault("labels", {})
    for key in ("kueue.x-k8s.io/pod-group-name", "kueue.x-k8s.io/prebuilt-workload-name"):
        if key in labels:
            raise invalid(POD, _name(pod), [(f"metadata.labels[{key}]",
                                             f"Forbidden: {NOT_EMULATED} {key} (pod groups, prebuilt workloads)")])
    labels[MANAGED_LABEL] = "true"
    gates = pod.setdefault("spec", {}).setdefault("schedulingGates", [])
    if not any(g.get("name") == ADMISSION_GATE for g in gates):
        gates.append({"name": ADMISSION_GATE})


def _mutate_job(job: dict[str, Any]) -> None:
    labels = job["metadata"].get("labels") or {}
    if "kueue.x-k8s.io/prebuilt-workload-name" in labels:
        raise invalid(JOB, _name(job), [("metadata.labels[kueue.x-k8s.io/prebuilt-workload-name]",
                                         f"Forbidden: {NOT_EMULATED} prebuilt workloads")])
    job.setdefault("spec", {})["suspend"] = True


def kueue_hook(kind: Kind, operation: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
    """The store admission hook (see Store.add_hook)."""
    if new is None or operation not in ("CREATE", "UPDATE"):
        return
    if kind.group == KUEUE_GROUP:
        if kind is COHORT and operation == "CREATE":
            raise invalid(kind, _name(new), [("kind", f"Forbidden: {NOT_EMULATED} Cohort objects (hierarchical "
                                                      "cohorts, cohort quotas); ClusterQueues share quota "
                                                      "through spec.cohortName")])
        problems = admit(kind.plural, new, old)
        # Status writes (the loop's own) do not change what is asked for: only new or changed specs are checked.
        if not problems and (old is None or new.get("spec") != old.get("spec")):
            problems = unsupported(kind, new)
        if problems:
            raise invalid(kind, _name(new), problems)
        return
    meta = new.get("metadata") or {}
    if operation != "CREATE" or QUEUE_LABEL not in (meta.get("labels") or {}):
        return
    if meta.get("namespace") in UNMANAGED_NAMESPACES:
        return  # Kueue's default managedJobsNamespaceSelector leaves the system namespaces alone
    if kind is POD:
        if any(ref.get("controller") for ref in meta.get("ownerReferences") or []):
            return  # a Job's (or other controller's) pod: Kueue manages its owner, not the pod itself
        _mutate_pod(new)
    elif kind is JOB:
        _mutate_job(new)
