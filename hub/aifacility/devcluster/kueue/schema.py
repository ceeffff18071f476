"""What the API server does with a custom resource against its CRD: prune, default, validate (schema and CEL).

The schemas are the v1beta2 `openAPIV3Schema`s of Kueue v0.19.2's CRDs (`crds/*.json`, see NOTICE). As the
real API server does for structural schemas, unknown fields are pruned, `default`s are filled in, the
OpenAPI schema is checked (jsonschema) and the `x-kubernetes-validations` CEL rules are evaluated (cel-python),
transition rules (`oldSelf`) on updates only.
"""

from __future__ import annotations

import json
import logging
from copy import deepcopy
from functools import cache
from importlib import resources
from typing import Any

import celpy
from jsonschema import Draft7Validator

log = logging.getLogger(__name__)

Schema = dict[str, Any]
Problems = list[tuple[str, str]]  # (field path, message)


@cache
def crd_schema(plural: str) -> Schema:
    """The v1beta2 openAPIV3Schema of a Kueue kind by plural (`clusterqueues`, ...)."""
    text = resources.files("aifacility.devcluster.kueue").joinpath(f"crds/{plural}.json").read_text()
    return json.loads(text)["openAPIV3Schema"]


@cache
def _validator(plural: str) -> Draft7Validator:
    return Draft7Validator(crd_schema(plural))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def prune(schema: Schema, value: Any) -> None:
    """Drop fields the schema does not know (in place), unless it preserves unknown fields."""
    if isinstance(value, dict) and schema.get("type") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is not None:
            for key in [k for k in value if k not in props]:
                if key in ("apiVersion", "kind", "metadata"):
                    continue
                del value[key]
            for key, sub in props.items():
                if key in value and key != "metadata":
                    prune(sub, value[key])
        elif isinstance(extra, dict):
            for v in value.values():
                prune(extra, v)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            prune(schema["items"], item)


def apply_defaults(schema: Schema, value: Any) -> None:
    """Fill in `default`s of absent properties (in place), recursively, like the API server's defaulting."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = deepcopy(sub["default"])
            if key in value and key != "metadata":
                apply_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not schema.get("properties"):
            for v in value.values():
                apply_defaults(extra, v)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)


def schema_problems(plural: str, obj: dict[str, Any]) -> Problems:
    out: Problems = []
    for err in sorted(_validator(plural).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = ""
        for part in err.absolute_path:
            path = _join(path, part)
        out.append((path or "(object)", _message(err)))
    return out


def _message(err: Any) -> str:
    if err.validator == "required":
        return f"Required value: {err.message}"
    if err.validator == "anyOf" or (err.validator == "pattern" and "KMGTPE" in str(err.validator_value)):
        return f"Invalid value: {json.dumps(err.instance)}: must be a quantity such as 2, 500m or 4Gi"
    if err.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in err.validator_value)
        return f"Unsupported value: {json.dumps(err.instance)}: supported values: {allowed}"
    return f"Invalid value: {json.dumps(err.instance)[:80]}: {err.message[:200]}"


_env = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _env.program(_env.compile(rule))


def _uses_old(rule: str) -> bool:
    return "oldSelf" in rule


def cel_problems(schema: Schema, value: Any, old: Any, path: str = "", *, has_old: bool = False) -> Problems:
    """Evaluate every x-kubernetes-validations rule on `value` (and `old` for transition rules)."""
    out: Problems = []
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule["rule"]
        if _uses_old(text) and not has_old:
            continue  # transition rules run only when there is an old value (updates)
        activation = {"self": celpy.json_to_cel(value)}
        if _uses_old(text):
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = _program(text).evaluate(activation)
        except Exception as e:  # cel-python raises its own error types for runtime errors
            log.warning("CEL rule %r failed on %s: %s", text, path or "(object)", e)
            result = False
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            out.append((path or "(object)", f"Invalid value: {rule.get('message') or 'failed rule: ' + text}"))
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value and key != "metadata":
                child_old = old.get(key) if has_old and isinstance(old, dict) else None
                out += cel_problems(sub, value[key], child_old, _join(path, key),
                                    has_old=has_old and isinstance(old, dict) and key in old)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not schema.get("properties"):
            for key, v in value.items():
                out += cel_problems(extra, v, None, _join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            # List items are not correlated with the old list here: their transition rules do not run.
            out += cel_problems(schema["items"], item, None, _join(path, i))
    return out


def admit(plural: str, new: dict[str, Any], old: dict[str, Any] | None) -> Problems:
    """Prune and default `new` in place; return what is invalid about it (empty when valid)."""
    schema = crd_schema(plural)
    prune(schema, new)
    apply_defaults(schema, new)
    problems = schema_problems(plural, new)
    if problems:
        return problems
    return cel_problems(schema, new, old, has_old=old is not None)
