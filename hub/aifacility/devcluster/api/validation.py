"""What the real API server validates and defaults, as far as clients rely on it.

Installed as a store admission hook so that objects written by controllers get the same treatment as those
arriving over HTTP.
"""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from typing import Any

from aifacility.facility.quantity import parse_quantity

from .. import kinds
from ..kinds import Kind
from ..store import invalid

Obj = dict[str, Any]
Causes = list[tuple[str, str]]

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")


def _key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def _metadata_causes(meta: Obj) -> Causes:
    causes: Causes = []
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, dict):
        return [("metadata.labels", "Invalid value: must be a map of strings")]
    for key, value in (labels or {}).items():
        problem = _key_problem(key)
        if problem:
            causes.append(("metadata.labels", f'Invalid value: "{key}": {problem}'))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                (
                    "metadata.labels",
                    f"Invalid value: {json.dumps(value)}: a valid label must be an empty string or consist of "
                    "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                )
            )
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            causes.append(("metadata.annotations", "Invalid value: annotations must be a map of strings"))
        else:
            for key in annotations:
                problem = _key_problem(key)
                if problem:
                    causes.append(("metadata.annotations", f'Invalid value: "{key}": {problem}'))
    return causes


def _containers_causes(spec: Any, path: str) -> Causes:
    if not isinstance(spec, dict):
        return [(path, "Required value")]
    causes: Causes = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [(f"{path}.containers", "Required value")]
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            where = f"{path}.{field}[{i}]"
            if not isinstance(c, dict):
                causes.append((where, "Invalid value: must be an object"))
                continue
            name = c.get("name")
            if not name:
                causes.append((f"{where}.name", "Required value"))
            elif not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
                causes.append(
                    (
                        f"{where}.name",
                        f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 label must consist of lower case "
                        "alphanumeric characters or '-', and must start and end with an alphanumeric character",
                    )
                )
            elif name in seen:
                causes.append((f"{where}.name", f'Duplicate value: "{name}"'))
            else:
                seen.add(name)
            if not c.get("image"):
                causes.append((f"{where}.image", "Required value"))
            resources = c.get("resources")
            for part in ("limits", "requests"):
                amounts = resources.get(part) if isinstance(resources, dict) else None
                for res_name, qty in (amounts if isinstance(amounts, dict) else {}).items():
                    try:
                        parse_quantity(canonical_quantity(qty))
                    except ValueError:
                        causes.append((f"{where}.resources.{part}[{res_name}]",
                                       f"Invalid value: {json.dumps(qty)}: must be a quantity such as 2, 500m or 4Gi"))
            for j, port in enumerate(c.get("ports") or []):
                cp = port.get("containerPort") if isinstance(port, dict) else None
                if not isinstance(cp, int) or not 0 < cp < 65536:
                    causes.append(
                        (f"{where}.ports[{j}].containerPort", f"Invalid value: {cp}: must be between 1 and 65535")
                    )
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in _RESTART_POLICIES:
        causes.append(
            (
                f"{path}.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"',
            )
        )
    return causes


def validate(kind: Kind, obj: Obj) -> None:
    """Raise the Kubernetes-style 422 Invalid for what clients rely on being checked."""
    meta = obj.get("metadata") or {}
    causes = _metadata_causes(meta)
    if kind is kinds.POD:
        causes += _containers_causes(obj.get("spec"), "spec")
    elif kind is kinds.JOB:
        template = (obj.get("spec") or {}).get("template")
        if not isinstance(template, dict):
            causes.append(("spec.template", "Required value"))
        else:
            pod_spec = template.get("spec")
            causes += _containers_causes(pod_spec, "spec.template.spec")
            policy = (pod_spec or {}).get("restartPolicy") if isinstance(pod_spec, dict) else None
            if policy not in ("OnFailure", "Never"):
                causes.append(
                    ("spec.template.spec.restartPolicy", 'Required value: valid values: "OnFailure", "Never"')
                )
        for field in ("parallelism", "completions", "backoffLimit"):
            value = (obj.get("spec") or {}).get(field)
            if value is not None and (not isinstance(value, int) or value < 0):
                causes.append((f"spec.{field}", f"Invalid value: {value}: must be greater than or equal to 0"))
    elif kind is kinds.SERVICE:
        causes += _service_causes(obj.get("spec"))
    elif kind is kinds.CONFIGMAP or kind is kinds.SECRET:
        for field in ("data", "stringData", "binaryData"):
            data = obj.get(field)
            if data is not None and (not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values())):
                causes.append((field, "Invalid value: must be a map of strings"))
    if causes:
        raise invalid(kind, meta.get("name", ""), causes)


def _list(value: Any) -> list[Any]:
    """A list field, or nothing when the client sent another type (validation reports it afterwards)."""
    return value if isinstance(value, list) else []


def _service_causes(spec: Any) -> Causes:
    if not isinstance(spec, dict):
        return []
    causes: Causes = []
    ports = spec.get("ports")
    if ports is not None and not isinstance(ports, list):
        return [("spec.ports", "Invalid value: must be a list of ports")]
    for i, port in enumerate(ports or []):
        number = port.get("port") if isinstance(port, dict) else None
        if not isinstance(number, int) or not 0 < number < 65536:
            causes.append(
                (f"spec.ports[{i}].port", f"Invalid value: {json.dumps(number)}: must be between 1 and 65535")
            )
    selector = spec.get("selector")
    if selector is not None and (
        not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values())
    ):
        causes.append(("spec.selector", "Invalid value: must be a map of strings"))
    return causes


def _image_pull_policy(image: str) -> str:
    tag = image.rsplit("/", 1)[-1]
    if "@" in tag:
        return "IfNotPresent"
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


def canonical_quantity(value: Any) -> Any:
    """JSON numbers in resources become quantity strings, as the API server's Quantity type writes them back
    (KubeSpawner sends `cpu: 2.0` and `memory: 17179869184`; typed clients then read strings)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        d = Decimal(str(value))
        return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")
    return value


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        spec.setdefault("serviceAccountName", spec.get("serviceAccount"))
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
    else:
        spec["serviceAccountName"] = spec["serviceAccount"] = "default"
    for field in ("initContainers", "containers"):
        for c in _list(spec.get(field)):
            if isinstance(c, dict):
                c.setdefault("imagePullPolicy", _image_pull_policy(str(c.get("image", ""))))
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                res = c.setdefault("resources", {})
                for part in ("limits", "requests"):
                    if isinstance(res, dict) and isinstance(res.get(part), dict):
                        res[part] = {k: canonical_quantity(v) for k, v in res[part].items()}
                for port in _list(c.get("ports")):
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")


def _default(kind: Kind, obj: Obj) -> None:
    if kind is kinds.POD and isinstance(obj.get("spec"), dict):
        default_pod_spec(obj["spec"])
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif kind is kinds.JOB and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        template = spec.get("template")
        if isinstance(template, dict):
            uid = obj["metadata"].get("uid", "")
            name = obj["metadata"].get("name", "")
            labels = {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
            if not spec.get("selector"):
                spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            meta = template.setdefault("metadata", {})
            meta.setdefault("labels", {})
            for k, v in labels.items():
                meta["labels"].setdefault(k, v)
            if isinstance(template.get("spec"), dict):
                default_pod_spec(template["spec"])
    elif kind is kinds.SERVICE and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in _list(spec.get("ports")):
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])
    elif kind is kinds.EVENT:
        # Go marshals these unset times as null rather than omitting them, and readers (KubeSpawner) index them.
        for field in ("firstTimestamp", "lastTimestamp", "eventTime"):
            obj.setdefault(field, None)
    elif kind is kinds.SECRET and isinstance(obj.get("stringData"), dict):
        data = obj.setdefault("data", {}) or {}
        for k, v in obj.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data


def admission_hook(kind: Kind, operation: str, new: Obj | None, old: Obj | None) -> None:
    """The store hook: default, then validate, on CREATE and UPDATE."""
    if new is None or operation == "DELETE":
        return
    if operation == "CREATE":
        _default(kind, new)
    elif kind is kinds.SECRET and isinstance(new.get("stringData"), dict):
        _default(kind, new)
    validate(kind, new)
