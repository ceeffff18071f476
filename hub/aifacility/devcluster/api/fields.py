"""Which field selectors each kind supports, as the real API server restricts them.

The store evaluates any dotted path, but code developed here must also work against a real cluster, which
answers 400 for fields it does not index; so the API refuses them the same way.
"""

from __future__ import annotations

from .. import kinds
from ..kinds import Kind
from ..selectors import SelectorError, parse_field_selector
from .errors import ApiError

_META = frozenset({"metadata.name", "metadata.namespace"})
_EVENT = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)

SUPPORTED: dict[Kind, frozenset[str]] = {
    kinds.POD: frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    kinds.NODE: frozenset({"spec.unschedulable"}),
    kinds.NAMESPACE: frozenset({"status.phase"}),
    kinds.EVENT: _EVENT,
    # events.k8s.io/v1 names the same indexed fields with its own names
    kinds.EVENT_V1: frozenset(
        {
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        }
    ),
    kinds.SECRET: frozenset({"type"}),
    kinds.SERVICE: frozenset({"spec.clusterIP", "spec.type"}),
    # the selectableFields of the Kueue v0.19 Workload CRD
    kinds.WORKLOAD: frozenset({"status.admission.clusterQueue"}),
}


def check_field_selector(kind: Kind, selector: str | None) -> None:
    """400 `field label not supported: <field>` for a field the real server would not filter on."""
    try:
        requirements = parse_field_selector(selector)
    except SelectorError as e:
        raise ApiError(400, str(e)) from None
    allowed = _META | SUPPORTED.get(kind, frozenset())
    for req in requirements:
        field = ".".join(req.path)
        if field not in allowed:
            raise ApiError(400, f"field label not supported: {field}")
