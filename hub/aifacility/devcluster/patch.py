"""The three patch types of the Kubernetes API: JSON merge patch, JSON patch (RFC 6902) and strategic merge patch.

Strategic merge patch is driven by a table of the merge keys the Kubernetes Go types declare
(`patchMergeKey`/`patchStrategy` tags); lists not in the table are replaced whole, as for atomic lists upstream.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

Obj = dict[str, Any]


class PatchError(ValueError):
    """The patch document is malformed (400) or cannot be applied to the object (422)."""

    def __init__(self, message: str, *, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


# (name of the field holding the enclosing object, list field) -> merge key; "*" matches any holder.
# Taken from the struct tags of k8s.io/api core/v1, batch/v1 and apimachinery meta/v1.
MERGE_KEYS: dict[tuple[str, str], str] = {
    ("*", "containers"): "name",
    ("*", "initContainers"): "name",
    ("*", "ephemeralContainers"): "name",
    ("*", "volumes"): "name",
    ("*", "env"): "name",
    ("*", "volumeMounts"): "mountPath",
    ("*", "volumeDevices"): "devicePath",
    ("*", "imagePullSecrets"): "name",
    ("*", "conditions"): "type",
    ("*", "ownerReferences"): "uid",
    ("*", "hostAliases"): "ip",
    ("*", "readinessGates"): "conditionType",
    ("*", "schedulingGates"): "name",
    ("*", "resourceClaims"): "name",
    ("*", "topologySpreadConstraints"): "topologyKey",
    ("*", "addresses"): "type",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("ephemeralContainers", "ports"): "containerPort",
    ("spec", "ports"): "port",  # ServiceSpec.ports
}

# Lists of scalars with patchStrategy "merge": patched lists are unions, not replacements.
MERGED_SCALAR_LISTS: frozenset[tuple[str, str]] = frozenset({("metadata", "finalizers")})

_DIRECTIVE = "$patch"
_ORDER_PREFIX = "$setElementOrder/"
_DELETE_PRIMITIVE_PREFIX = "$deleteFromPrimitiveList/"
_RETAIN_KEYS = "$retainKeys"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, operations: Any) -> Obj:
    """RFC 6902 JSON patch through the `jsonpatch` library."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a JSON array of operations", code=400)
    try:
        patch = jsonpatch.JsonPatch(operations)
        result = patch.apply(copy.deepcopy(target))
    except jsonpatch.InvalidJsonPatch as e:
        raise PatchError(f"invalid JSON patch: {e}", code=400) from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise PatchError(f"the JSON patch could not be applied: {e}") from None
    except (TypeError, KeyError, IndexError) as e:
        raise PatchError(f"the JSON patch could not be applied: {e!s}") from None
    if not isinstance(result, dict):
        raise PatchError("the JSON patch must leave an object, not replace it with a scalar")
    return result


def strategic_merge_patch(target: Obj, patch: Any) -> Obj:
    """Strategic merge patch as kubectl apply/patch send it (see the module docstring for the key table)."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object", code=400)
    result = _merge_map(target, patch, holder="")
    return result if result is not None else {}


def _merge_map(target: Any, patch: Obj, holder: str) -> Obj | None:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    if directive is not None:
        raise PatchError(f"unknown patch directive {directive!r} (expected 'replace' or 'delete')", code=400)
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith(_ORDER_PREFIX):
            if isinstance(value, list):
                orders[key[len(_ORDER_PREFIX) :]] = value
            continue
        if key.startswith(_DELETE_PRIMITIVE_PREFIX):
            field = key[len(_DELETE_PRIMITIVE_PREFIX) :]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if key == _RETAIN_KEYS:
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _merge_map(result.get(key), value, holder=key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, holder, key)
        else:
            result[key] = copy.deepcopy(value)
    retain = patch.get(_RETAIN_KEYS)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(result[field], order, _merge_key(holder, field))
    return result


def _merge_key(holder: str, field: str) -> str | None:
    return MERGE_KEYS.get((holder, field)) or MERGE_KEYS.get(("*", field))


def _merge_list(target: Any, patch: list[Any], holder: str, field: str) -> list[Any]:
    current = target if isinstance(target, list) else []
    if (holder, field) in MERGED_SCALAR_LISTS:
        merged = list(current)
        merged.extend(v for v in patch if v not in merged)
        return copy.deepcopy(merged)
    key = _merge_key(holder, field)
    if key is None or not all(isinstance(v, dict) for v in patch):
        return _strip_directives(patch)
    if any(isinstance(v, dict) and v.get(_DIRECTIVE) == "replace" for v in patch):
        return [_strip_directives(v) for v in patch if v.get(_DIRECTIVE) != "replace"]
    result = [copy.deepcopy(v) for v in current]
    for item in patch:
        if key not in item:
            raise PatchError(f"a {field} entry in a strategic merge patch needs its merge key {key!r}", code=400)
        index = next(
            (i for i, v in enumerate(result) if isinstance(v, dict) and v.get(key) == item[key]),
            None,
        )
        if item.get(_DIRECTIVE) == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_strip_directives(item))
        else:
            merged_item = _merge_map(result[index], item, holder=field)
            if merged_item is not None:
                result[index] = merged_item
    return result


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Honour `$setElementOrder`: listed elements first in that order, the others after, as they were."""

    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(o) for o in order]
    ranked = sorted(
        enumerate(items),
        key=lambda p: (wanted.index(ident(p[1])) if ident(p[1]) in wanted else len(wanted), p[0]),
    )
    return [v for _, v in ranked]


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if k not in (_DIRECTIVE, _RETAIN_KEYS)
            and not k.startswith(_ORDER_PREFIX)
            and not k.startswith(_DELETE_PRIMITIVE_PREFIX)
            and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply",
}


def apply_patch(target: Obj, patch: Any, patch_type: str, *, strategic_allowed: bool = True) -> Obj:
    """Apply a decoded patch body of `patch_type` ("merge" | "json" | "strategic")."""
    if patch_type == "merge":
        if not isinstance(patch, dict):
            raise PatchError("a JSON merge patch must be a JSON object", code=400)
        return merge_patch(target, patch)
    if patch_type == "json":
        return json_patch(target, patch)
    if patch_type == "strategic":
        if not strategic_allowed:
            raise PatchError("strategic merge patch is not supported for custom resources", code=415)
        return strategic_merge_patch(target, patch)
    raise PatchError(f"unsupported patch type {patch_type!r}", code=415)
