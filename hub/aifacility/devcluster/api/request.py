"""Turning an HTTP request into (kind, namespace, name, subresource), query options and a decoded body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from .. import kinds
from ..kinds import Kind
from .errors import ApiError
from .protobuf import ProtobufError, decode_object

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAX_BODY = 3 * 1024 * 1024  # the real API server's default request size limit


@dataclass(frozen=True)
class Target:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_target(group: str, version: str, tail: str) -> Target:
    """`namespaces/<ns>/<plural>[/<name>[/<sub>]]` or `<plural>[/<name>[/<sub>]]` below a group-version."""
    segs = [s for s in tail.split("/") if s]
    namespace: str | None = None
    if len(segs) >= 3 and segs[0] == "namespaces" and not group and segs[2] in ("status", "finalize"):
        # /api/v1/namespaces/<name>/status is the namespace's own subresource, not a resource inside it.
        segs = [segs[0], segs[1], segs[2]]
    elif len(segs) >= 3 and segs[0] == "namespaces":
        namespace, segs = segs[1], segs[2:]
    if not segs or len(segs) > 3:
        raise ApiError(404, "the server could not find the requested resource", "NotFound")
    try:
        kind = kinds.by_plural(group, version, segs[0])
    except KeyError:
        raise ApiError(404, "the server could not find the requested resource", "NotFound") from None
    if namespace is not None and not kind.namespaced:
        raise ApiError(404, "the server could not find the requested resource", "NotFound")
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    if sub is not None and sub not in kind.subresources:
        raise ApiError(404, f"the server could not find the requested resource ({kind.plural}/{sub})", "NotFound")
    return Target(kind, namespace, name, sub)


def flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").lower()
    if value in ("", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise ApiError(400, f"{name}: Invalid value: {value!r}: must be true or false")


def integer(request: web.Request, name: str, minimum: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: Invalid value: {raw!r}: must be an integer") from None
    if minimum is not None and value < minimum:
        raise ApiError(400, f"{name}: Invalid value: {value}: must be greater than or equal to {minimum}")
    return value


def dry_run(request: web.Request, body: dict[str, Any] | None = None) -> bool:
    values = request.query.getall("dryRun", [])
    if body and isinstance(body.get("dryRun"), list):
        values = [*values, *body["dryRun"]]
    for v in values:
        if v != "All":
            raise ApiError(400, f'dryRun: Unsupported value: {v!r}: supported values: "All"')
    return bool(values)


def check_field_validation(request: web.Request) -> None:
    value = request.query.get("fieldValidation")
    if value not in (None, "", "Ignore", "Warn", "Strict"):
        raise ApiError(
            400, f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", "Warn", "Strict"'
        )


async def read_body(request: web.Request, *, allow_list: bool = False) -> Any:
    """The request body as JSON (or YAML); a malformed one is a 400 naming the problem."""
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, "the request body is larger than the 3 MiB the API server accepts")
    if not raw.strip():
        raise ApiError(400, "the request has no body; send the object as JSON")
    ctype = request.content_type
    if ctype == PROTOBUF:
        try:
            return decode_object(raw)
        except ProtobufError as e:
            raise ApiError(415, str(e), "UnsupportedMediaType") from None
    try:
        if "yaml" in ctype:
            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError(400, f"the request body is not valid {'YAML' if 'yaml' in ctype else 'JSON'}: {e}") from None
    if not isinstance(data, dict) and not (allow_list and isinstance(data, list)):
        raise ApiError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def require_json_content(request: web.Request) -> None:
    ctype = request.content_type
    if ctype not in (
        PROTOBUF,
        "application/json",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "",
        "application/octet-stream",
    ):
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json, application/yaml (got {ctype!r})",
        )
