"""Decoding the protobuf bodies kubectl's typed clients send for a few core kinds.

`kubectl create namespace|configmap|secret|serviceaccount` send `application/vnd.kubernetes.protobuf`: the
magic `k8s\\0` and a runtime.Unknown wrapping the object's protobuf. The wire format is small, so the few
message shapes needed are described here as tables (field numbers from k8s.io/api generated.proto) instead of
pulling in generated code for all of Kubernetes.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"

# message name -> field number -> (json name, type); types: "string", "bytes", "int", "bool", "time",
# "strings" (repeated string), "map" (string->string), "bytesmap" (string->base64 bytes), "quantitymap"
# (resource quantities), "intorstr" (IntOrString), or a message name, with a "[]" suffix for repeated
# messages; a "?" suffix marks a Go pointer field, whose zero value is kept.
SCHEMAS: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {
        1: ("typeMeta", "TypeMeta"),
        2: ("raw", "bytes"),
        3: ("contentEncoding", "string"),
        4: ("contentType", "string"),
    },
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "ObjectMeta": {
        1: ("name", "string"),
        2: ("generateName", "string"),
        3: ("namespace", "string"),
        5: ("uid", "string"),
        6: ("resourceVersion", "string"),
        7: ("generation", "int"),
        8: ("creationTimestamp", "time"),
        11: ("labels", "map"),
        12: ("annotations", "map"),
        13: ("ownerReferences", "OwnerReference[]"),
        14: ("finalizers", "strings"),
    },
    "OwnerReference": {
        1: ("kind", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("controller", "bool?"),
        7: ("blockOwnerDeletion", "bool?"),
    },
    "ObjectReference": {
        1: ("kind", "string"),
        2: ("namespace", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
    },
    "LocalObjectReference": {1: ("name", "string")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"), 3: ("status", "Ignored")},
    "NamespaceSpec": {1: ("finalizers", "strings")},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool?"),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool?"),
    },
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta"),
        2: ("secrets", "ObjectReference[]"),
        3: ("imagePullSecrets", "LocalObjectReference[]"),
        4: ("automountServiceAccountToken", "bool?"),
    },
    # kubectl create service / expose
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec"), 3: ("status", "Ignored")},
    "ServiceSpec": {
        1: ("ports", "ServicePort[]"),
        2: ("selector", "map"),
        3: ("clusterIP", "string"),
        18: ("clusterIPs", "strings"),
        4: ("type", "string"),
        5: ("externalIPs", "strings"),
        7: ("sessionAffinity", "string"),
        10: ("externalName", "string"),
        19: ("ipFamilies", "strings"),
        17: ("ipFamilyPolicy", "string?"),
    },
    "ServicePort": {
        1: ("name", "string"),
        2: ("protocol", "string"),
        6: ("appProtocol", "string?"),
        3: ("port", "int"),
        4: ("targetPort", "intorstr"),
        5: ("nodePort", "int"),
    },
    # kubectl create job
    "Job": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec"), 3: ("status", "Ignored")},
    "JobSpec": {
        1: ("parallelism", "int?"),
        2: ("completions", "int?"),
        3: ("activeDeadlineSeconds", "int?"),
        7: ("backoffLimit", "int?"),
        5: ("manualSelector", "bool?"),
        6: ("template", "PodTemplateSpec"),
        8: ("ttlSecondsAfterFinished", "int?"),
        9: ("completionMode", "string?"),
        10: ("suspend", "bool?"),
    },
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {
        20: ("initContainers", "Container[]"),
        2: ("containers", "Container[]"),
        3: ("restartPolicy", "string"),
        4: ("terminationGracePeriodSeconds", "int?"),
        5: ("activeDeadlineSeconds", "int?"),
        6: ("dnsPolicy", "string"),
        7: ("nodeSelector", "map"),
        8: ("serviceAccountName", "string"),
        9: ("serviceAccount", "string"),
        10: ("nodeName", "string"),
        14: ("securityContext", "Ignored"),
        19: ("schedulerName", "string"),
        24: ("priorityClassName", "string"),
        30: ("enableServiceLinks", "bool?"),
    },
    "Container": {
        1: ("name", "string"),
        2: ("image", "string"),
        3: ("command", "strings"),
        4: ("args", "strings"),
        5: ("workingDir", "string"),
        6: ("ports", "ContainerPort[]"),
        7: ("env", "EnvVar[]"),
        8: ("resources", "ResourceRequirements"),
        9: ("volumeMounts", "VolumeMount[]"),
        13: ("terminationMessagePath", "string"),
        20: ("terminationMessagePolicy", "string"),
        14: ("imagePullPolicy", "string"),
        16: ("stdin", "bool"),
        17: ("stdinOnce", "bool"),
        18: ("tty", "bool"),
    },
    "ContainerPort": {
        1: ("name", "string"),
        2: ("hostPort", "int"),
        3: ("containerPort", "int"),
        4: ("protocol", "string"),
        5: ("hostIP", "string"),
    },
    "EnvVar": {1: ("name", "string"), 2: ("value", "string")},
    "ResourceRequirements": {1: ("limits", "quantitymap"), 2: ("requests", "quantitymap")},
    "VolumeMount": {
        1: ("name", "string"),
        2: ("readOnly", "bool"),
        3: ("mountPath", "string"),
        4: ("subPath", "string"),
    },
    "Quantity": {1: ("string", "string")},
    "Ignored": {},
}
SUPPORTED_KINDS = ("Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service", "Job")
# Messages whose unknown fields may be dropped: server-owned or irrelevant to the objects kubectl creates.
_LENIENT = frozenset({"Unknown", "ObjectMeta", "Ignored"})


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
            if pos > len(data):
                raise ProtobufError("truncated field")
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


_SCALARS = frozenset({"string", "bytes", "int", "bool", "time"})


def _int32(value: Any) -> int:
    """Varints of negative int32/int64 arrive as 64-bit two's complement."""
    value = int(value) if not isinstance(value, bytes) else 0
    return value - (1 << 64) if value >= 1 << 63 else value


def _map_entry(raw: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, v in _fields(raw):
        if number == 1:
            key = v.decode()
        elif number == 2:
            value = v
    return key, value


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    schema = SCHEMAS[name]
    out: dict[str, Any] = {}
    for number, _wire, value in _fields(data):
        if number not in schema:
            if name in _LENIENT or value in (b"", 0):
                continue  # server-owned fields, or empty ones Go marshals anyway
            raise ProtobufError(
                f"field {number} of {name} is not understood in protobuf by the development cluster; "
                "send the object as JSON (e.g. kubectl create -f with a manifest)"
            )
        field, type_ = schema[number]
        # Go writes non-pointer fields even when empty; JSON omits them, so do that here (`?`: a pointer field,
        # whose zero value was set on purpose).
        pointer = type_.endswith("?")
        type_ = type_.rstrip("?")
        if not pointer and type_ in _SCALARS and value in (b"", 0):
            continue
        if type_ == "string":
            out[field] = value.decode()
        elif type_ == "bytes":
            out[field] = value
        elif type_ == "bool":
            out[field] = bool(value)
        elif type_ == "time":
            seconds = dict((n, v) for n, _, v in _fields(value)).get(1, 0)
            if not seconds:
                continue
            out[field] = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        elif type_ == "strings":
            out.setdefault(field, []).append(value.decode())
        elif type_ == "map":
            k, v = _map_entry(value)
            out.setdefault(field, {})[k] = v.decode()
        elif type_ == "quantitymap":
            k, v = _map_entry(value)
            out.setdefault(field, {})[k] = decode_message("Quantity", v).get("string", "")
        elif type_ == "intorstr":
            parts = {n: v for n, _, v in _fields(value)}
            out[field] = parts[3].decode() if parts.get(1) == 1 else _int32(parts.get(2, 0))
        elif type_ == "int":
            out[field] = _int32(value)
        elif type_ == "bytesmap":
            k, v = _map_entry(value)
            out.setdefault(field, {})[k] = base64.b64encode(v).decode()
        elif type_.endswith("[]"):
            out.setdefault(field, []).append(decode_message(type_[:-2], value))
        else:
            out[field] = decode_message(type_, value)
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf envelope -> the object as JSON; ProtobufError names what is not supported."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the protobuf body does not start with the Kubernetes magic number")
    try:
        unknown = decode_message("Unknown", body[len(MAGIC) :])
        type_meta = unknown.get("typeMeta") or {}
        kind = type_meta.get("kind", "")
        if kind not in SUPPORTED_KINDS:
            raise ProtobufError(
                f"protobuf bodies are only understood for {', '.join(SUPPORTED_KINDS)} (got {kind or 'no kind'}); "
                "send JSON instead (e.g. kubectl create -f with a manifest)"
            )
        obj = decode_message(kind, unknown.get("raw", b""))
    except (UnicodeDecodeError, IndexError) as e:
        raise ProtobufError(f"the protobuf body is malformed: {e}") from None
    obj["apiVersion"], obj["kind"] = type_meta.get("apiVersion", "v1"), kind
    return obj
