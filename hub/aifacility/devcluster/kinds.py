"""The resource kinds the development cluster serves, with the metadata discovery and routing need."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    group: str  # "" for the core group
    version: str  # "v1", "v1beta2"
    kind: str  # "Pod"
    plural: str  # "pods"
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    # Kubernetes validates most names as DNS-1123 subdomains, namespaces as DNS-1123 labels and services as
    # DNS-1035 labels (which must start with a letter).
    name_rule: str = "subdomain"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


_STATUS = frozenset({"status"})

NAMESPACE = Kind("", "v1", "Namespace", "namespaces", False, ("ns",), _STATUS, "label")
POD = Kind("", "v1", "Pod", "pods", True, ("po",), frozenset({"status", "log"}))
NODE = Kind("", "v1", "Node", "nodes", False, ("no",), _STATUS)
SERVICE = Kind("", "v1", "Service", "services", True, ("svc",), _STATUS, "label1035")
SECRET = Kind("", "v1", "Secret", "secrets", True)
CONFIGMAP = Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",))
PVC = Kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), _STATUS)
PV = Kind("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), _STATUS)
EVENT = Kind("", "v1", "Event", "events", True, ("ev",))
SERVICEACCOUNT = Kind("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",))
# No short name: "ev" belongs to the core Events, as kubectl otherwise warns about the ambiguity.
EVENT_V1 = Kind("events.k8s.io", "v1", "Event", "events", True)
JOB = Kind("batch", "v1", "Job", "jobs", True, (), _STATUS)

_KUEUE = "kueue.x-k8s.io"
RESOURCEFLAVOR = Kind(_KUEUE, "v1beta2", "ResourceFlavor", "resourceflavors", False, ("flavor", "flavors", "rf"))
CLUSTERQUEUE = Kind(_KUEUE, "v1beta2", "ClusterQueue", "clusterqueues", False, ("cq",), _STATUS)
LOCALQUEUE = Kind(_KUEUE, "v1beta2", "LocalQueue", "localqueues", True, ("queue", "queues", "lq"), _STATUS)
WORKLOAD = Kind(_KUEUE, "v1beta2", "Workload", "workloads", True, ("wl",), _STATUS)
WORKLOADPRIORITYCLASS = Kind(_KUEUE, "v1beta2", "WorkloadPriorityClass", "workloadpriorityclasses", False)
COHORT = Kind(_KUEUE, "v1beta2", "Cohort", "cohorts", False, (), _STATUS)

ALL_KINDS: tuple[Kind, ...] = (
    NAMESPACE,
    POD,
    NODE,
    SERVICE,
    SECRET,
    CONFIGMAP,
    PVC,
    PV,
    EVENT,
    SERVICEACCOUNT,
    EVENT_V1,
    JOB,
    RESOURCEFLAVOR,
    CLUSTERQUEUE,
    LOCALQUEUE,
    WORKLOAD,
    WORKLOADPRIORITYCLASS,
    COHORT,
)

_BY_KIND = {(k.api_version, k.kind): k for k in ALL_KINDS}
_BY_PLURAL = {(k.group, k.version, k.plural): k for k in ALL_KINDS}


def by_kind(api_version: str, kind: str) -> Kind:
    """The Kind for an object's apiVersion/kind; KeyError when the cluster does not serve it."""
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise KeyError(f"no kind {kind!r} is served in {api_version!r}") from None


def by_plural(group: str, version: str, plural: str) -> Kind:
    """The Kind served at /api(s)/<group>/<version>/<plural>; KeyError when none is."""
    try:
        return _BY_PLURAL[(group, version, plural)]
    except KeyError:
        where = f"{group}/{version}" if group else version
        raise KeyError(f"the server could not find the requested resource {plural!r} in {where}") from None


def groups() -> dict[str, list[str]]:
    """Group name -> served versions (the core group is "")."""
    out: dict[str, list[str]] = {}
    for k in ALL_KINDS:
        versions = out.setdefault(k.group, [])
        if k.version not in versions:
            versions.append(k.version)
    return out


_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(rf"^{_LABEL}$")
_LABEL_1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_LABEL_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def name_problems(kind: Kind, name: str) -> list[str]:
    """Kubernetes' messages for an invalid metadata.name of this kind (empty when the name is valid)."""
    problems: list[str] = []
    if kind.name_rule == "label1035":
        if len(name) > 63:
            problems.append("must be no more than 63 characters")
        if not _LABEL_1035_RE.match(name):
            problems.append(_LABEL_1035_MSG)
    elif kind.name_rule == "label":
        if len(name) > 63:
            problems.append("must be no more than 63 characters")
        if not _LABEL_RE.match(name):
            problems.append(_LABEL_MSG)
    else:
        if len(name) > 253:
            problems.append("must be no more than 253 characters")
        if not _SUBDOMAIN_RE.match(name):
            problems.append(_SUBDOMAIN_MSG)
    return problems


def namespace_problems(name: str) -> list[str]:
    return name_problems(NAMESPACE, name)
