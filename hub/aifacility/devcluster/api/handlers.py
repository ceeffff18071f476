"""The resource endpoints: create, read, list, replace, patch, delete, delete collection (and dry runs)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from aiohttp import web

from .. import kinds
from ..kinds import Kind, name_problems
from ..patch import PATCH_TYPES, PatchError, apply_patch
from ..store import AlreadyExists, Conflict, NotFound, invalid, now_rfc3339
from . import tables
from .errors import ApiError, json_response
from .eventsv1 import ApiStore
from .fields import check_field_selector
from .podlogs import pod_log
from .request import (
    Target,
    check_field_validation,
    dry_run,
    integer,
    parse_target,
    read_body,
    require_json_content,
)
from .state import API_STORE_KEY
from .validation import admission_hook
from .watch import serve_watch, wants_watch

Obj = dict[str, Any]

# Pod fields that may change after creation (ValidatePodUpdate); everything else in spec is immutable.
_MUTABLE_POD_FIELDS = ("activeDeadlineSeconds", "tolerations", "schedulingGates", "terminationGracePeriodSeconds")


def _store(request: web.Request) -> ApiStore:
    return request.app[API_STORE_KEY]


def target_of(request: web.Request) -> Target:
    info = request.match_info
    return parse_target(info.get("group", ""), info.get("version", "v1"), info["tail"])


async def dispatch(request: web.Request) -> web.StreamResponse:
    t = target_of(request)
    method = request.method
    if t.subresource == "log":
        if method != "GET":
            raise ApiError(405, f"{method} is not supported on pods/log", "MethodNotAllowed")
        return await pod_log(request, t)
    if t.name is None:
        if method == "GET":
            if wants_watch(request):
                return await serve_watch(request, t)
            return list_objects(request, t)
        if method == "POST":
            return await create(request, t)
        if method == "DELETE":
            return await delete_collection(request, t)
    else:
        if method == "GET":
            return get_object(request, t)
        if method == "PUT":
            return await replace(request, t)
        if method == "PATCH":
            return await patch(request, t)
        if method == "DELETE":
            return await delete(request, t)
    raise ApiError(405, f"{method} is not supported on this path", "MethodNotAllowed")


def respond(request: web.Request, kind: Kind, obj: Obj, status: int = 200) -> web.Response:
    if tables.wants_table(request.headers.get("Accept", "")):
        body = tables.table(kind, [obj], obj["metadata"].get("resourceVersion", ""), _include_object(request))
        return json_response(body, status)
    if tables.wants_metadata_only(request.headers.get("Accept", "")):
        return json_response(tables.partial(obj), status)
    return json_response(obj, status)


def _include_object(request: web.Request) -> str:
    value = request.query.get("includeObject", "Metadata") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise ApiError(
            400, f'includeObject: Unsupported value: "{value}": supported values: "None", "Metadata", "Object"'
        )
    return value


def get_object(request: web.Request, t: Target) -> web.Response:
    assert t.name is not None
    return respond(request, t.kind, _store(request).get(t.kind, t.namespace, t.name))


# ---- list ------------------------------------------------------------------------------------------------------


def _encode_continue(rv: str, after: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "ns": after[0], "name": after[1]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["ns"]), str(data["name"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(
            400, "continue: Invalid value: the continue token is malformed; list again from the start"
        ) from None


def list_objects(request: web.Request, t: Target) -> web.Response:
    q = request.query
    rvm = q.get("resourceVersionMatch")
    if rvm not in (None, "", "NotOlderThan", "Exact"):
        raise ApiError(
            400, f'resourceVersionMatch: Unsupported value: "{rvm}": supported values: "NotOlderThan", "Exact"'
        )
    check_field_selector(t.kind, q.get("fieldSelector"))
    items, rv = _store(request).list(t.kind, t.namespace, q.get("labelSelector"), q.get("fieldSelector"))
    limit = integer(request, "limit", 0)
    integer(request, "timeoutSeconds", 0)  # only meaningful for watches, but a malformed one is still an error
    token = q.get("continue")
    if token:
        after = _decode_continue(token)
        items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
    meta: Obj = {"resourceVersion": rv}
    next_token = None
    if limit and len(items) > limit:
        last = items[limit - 1]["metadata"]
        next_token = _encode_continue(rv, (last.get("namespace", ""), last["name"]))
        meta["continue"] = next_token
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    if tables.wants_table(request.headers.get("Accept", "")):
        body = tables.table(t.kind, items, rv, _include_object(request), continue_token=next_token)
        return json_response(body)
    if tables.wants_metadata_only(request.headers.get("Accept", "")):
        partials = [tables.partial(i) for i in items]
        return json_response(
            {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": partials}
        )
    return json_response({"kind": t.kind.list_kind, "apiVersion": t.kind.api_version, "metadata": meta, "items": items})


# ---- create / replace / patch ------------------------------------------------------------------------------------


def _check_identity(t: Target, obj: Obj, *, creating: bool) -> None:
    api_version, kind_name = obj.get("apiVersion"), obj.get("kind")
    if api_version and api_version != t.kind.api_version:
        raise ApiError(
            400,
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({t.kind.api_version})",
        )
    if kind_name and kind_name != t.kind.kind:
        raise ApiError(400, f"the kind in the data ({kind_name}) does not match the expected kind ({t.kind.kind})")
    meta = obj.get("metadata")
    if meta is None:
        obj["metadata"] = meta = {}
    if not isinstance(meta, dict):
        raise ApiError(400, "metadata: Invalid value: must be an object")
    if t.kind.namespaced:
        body_ns = meta.get("namespace")
        if body_ns and t.namespace and body_ns != t.namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        if t.namespace:
            meta["namespace"] = t.namespace
        elif creating:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
    if t.name is not None and meta.get("name") and meta["name"] != t.name:
        raise ApiError(400, f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})")
    if t.name is not None:
        meta.setdefault("name", t.name)


async def create(request: web.Request, t: Target) -> web.Response:
    require_json_content(request)
    check_field_validation(request)
    body = await read_body(request)
    _check_identity(t, body, creating=True)
    store = _store(request)
    if dry_run(request):
        return respond(request, t.kind, _dry_run_create(store, t, body), 201)
    return respond(request, t.kind, store.create(t.kind, body), 201)


def _dry_run_create(store: ApiStore, t: Target, body: Obj) -> Obj:
    """Everything create checks, without storing: the answer is the object as it would be stored."""
    obj = copy.deepcopy(body)
    meta = obj["metadata"]
    obj["apiVersion"], obj["kind"] = t.kind.api_version, t.kind.kind
    name = meta.get("name") or ""
    if not name and not meta.get("generateName"):
        raise invalid(t.kind, "", [("metadata.name", "Required value: name or generateName is required")])
    if not name:
        name = meta["name"] = meta["generateName"] + "dryrn"
    problems = name_problems(t.kind, name)
    if problems:
        raise invalid(t.kind, name, [("metadata.name", f'Invalid value: "{name}": {"; ".join(problems)}')])
    if t.kind.namespaced:
        store.get(kinds.NAMESPACE, None, meta.get("namespace") or "default")
    try:
        store.get(t.kind, meta.get("namespace"), name)
    except NotFound:
        meta["creationTimestamp"] = now_rfc3339()
        admission_hook(t.kind, "CREATE", obj, None)
        return obj
    what = f"{t.kind.plural}.{t.kind.group}" if t.kind.group else t.kind.plural
    raise AlreadyExists(f'{what} "{name}" already exists')


def _check_pod_update(t: Target, old: Obj, new: Obj) -> None:
    if t.kind is not kinds.POD or t.subresource:
        return

    def comparable(spec: Any) -> Any:
        spec = copy.deepcopy(spec) or {}
        for f in _MUTABLE_POD_FIELDS:
            spec.pop(f, None)
        for field in ("containers", "initContainers"):
            for c in spec.get(field) or []:
                if isinstance(c, dict):
                    c.pop("image", None)
        return spec

    if comparable(old.get("spec")) != comparable(new.get("spec")):
        raise invalid(
            t.kind,
            old["metadata"]["name"],
            [
                (
                    "spec",
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                    "previously negative)",
                )
            ],
        )


def _write(request: web.Request, t: Target, old: Obj, new: Obj, *, dry: bool) -> web.Response:
    store = _store(request)
    _check_pod_update(t, old, new)
    if dry:
        rv = new.get("metadata", {}).get("resourceVersion")
        if rv and rv != old["metadata"].get("resourceVersion"):
            raise Conflict(
                f'Operation cannot be fulfilled on {t.kind.plural} "{t.name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
        result = copy.deepcopy(new)
        if t.subresource != "status" and t.kind.has_status and "status" in old:
            result["status"] = old["status"]
        admission_hook(t.kind, "UPDATE", result, old)
        return respond(request, t.kind, result)
    return respond(request, t.kind, store.update(t.kind, new, subresource=t.subresource))


async def replace(request: web.Request, t: Target) -> web.Response:
    require_json_content(request)
    check_field_validation(request)
    body = await read_body(request)
    _check_identity(t, body, creating=False)
    assert t.name is not None
    old = _store(request).get(t.kind, t.namespace, t.name)
    return _write(request, t, old, body, dry=dry_run(request))


async def patch(request: web.Request, t: Target) -> web.Response:
    check_field_validation(request)
    patch_type = PATCH_TYPES.get(request.content_type)
    if patch_type is None:
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(k for k in PATCH_TYPES if 'apply' not in k)} (got {request.content_type!r})",
            "UnsupportedMediaType",
        )
    if patch_type == "apply":
        raise ApiError(
            415,
            "server-side apply (application/apply-patch+yaml) is not supported by the development cluster; "
            "use client-side `kubectl apply` (without --server-side) or a merge/strategic/JSON patch",
            "UnsupportedMediaType",
        )
    body = await read_body(request, allow_list=patch_type == "json")
    assert t.name is not None
    old = _store(request).get(t.kind, t.namespace, t.name)
    # Strategic merge patch needs the Go types' merge keys, which custom resources do not have (as upstream).
    strategic_ok = t.kind.group not in ("kueue.x-k8s.io",)
    try:
        new = apply_patch(old, body, patch_type, strategic_allowed=strategic_ok)
    except PatchError as e:
        reason = {400: "BadRequest", 415: "UnsupportedMediaType"}.get(e.code, "Invalid")
        raise ApiError(e.code, str(e), reason) from None
    if not isinstance(new.get("metadata"), dict):
        raise ApiError(422, "metadata: Invalid value: the patch must leave metadata an object", "Invalid")
    for field, value in (("name", t.name), ("namespace", t.namespace if t.kind.namespaced else None)):
        if value is not None and new["metadata"].get(field) != value:
            raise ApiError(
                422, f"metadata.{field}: Invalid value: {new['metadata'].get(field)!r}: field is immutable", "Invalid"
            )
    if isinstance(body, dict) and not (body.get("metadata") or {}).get("resourceVersion"):
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
    return _write(request, t, old, new, dry=dry_run(request))


# ---- delete ------------------------------------------------------------------------------------------------------


async def _delete_options(request: web.Request) -> Obj:
    opts: Obj = {}
    if request.can_read_body:
        raw = await request.content.read(64 * 1024)
        if raw.strip():
            try:
                opts = json.loads(raw)
            except ValueError as e:
                raise ApiError(400, f"the DeleteOptions body is not valid JSON: {e}") from None
            if not isinstance(opts, dict):
                raise ApiError(400, "the DeleteOptions body must be a JSON object")
    grace = integer(request, "gracePeriodSeconds")
    if grace is None and opts.get("gracePeriodSeconds") is not None:
        if not isinstance(opts["gracePeriodSeconds"], int):
            raise ApiError(400, "gracePeriodSeconds: Invalid value: must be an integer")
        grace = opts["gracePeriodSeconds"]
    policy = request.query.get("propagationPolicy") or opts.get("propagationPolicy")
    if opts.get("orphanDependents") is True or request.query.get("orphanDependents") == "true":
        policy = policy or "Orphan"
    return {
        "grace": grace,
        "policy": policy,
        "preconditions": opts.get("preconditions") or {},
        "dry": dry_run(request, opts),
    }


def _check_preconditions(t: Target, obj: Obj, pre: Obj) -> None:
    meta = obj["metadata"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise Conflict(f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}")
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise Conflict(
            f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
            f"ResourceVersion in object meta: {meta.get('resourceVersion')}"
        )


async def delete(request: web.Request, t: Target) -> web.Response:
    assert t.name is not None
    if t.subresource:
        raise ApiError(405, f"DELETE is not supported on {t.kind.plural}/{t.subresource}", "MethodNotAllowed")
    opts = await _delete_options(request)
    store = _store(request)
    current = store.get(t.kind, t.namespace, t.name)
    _check_preconditions(t, current, opts["preconditions"])
    if opts["dry"]:
        return respond(request, t.kind, current)
    result = store.delete(
        t.kind, t.namespace, t.name, grace_period_seconds=opts["grace"], propagation_policy=opts["policy"]
    )
    return respond(request, t.kind, result)


async def delete_collection(request: web.Request, t: Target) -> web.Response:
    opts = await _delete_options(request)
    check_field_selector(t.kind, request.query.get("fieldSelector"))
    store = _store(request)
    items, _ = store.list(t.kind, t.namespace, request.query.get("labelSelector"), request.query.get("fieldSelector"))
    deleted: list[Obj] = []
    for obj in items:
        meta = obj["metadata"]
        if opts["dry"]:
            deleted.append(obj)
            continue
        try:
            deleted.append(
                store.delete(
                    t.kind,
                    meta.get("namespace"),
                    meta["name"],
                    grace_period_seconds=opts["grace"],
                    propagation_policy=opts["policy"],
                )
            )
        except NotFound:  # one object vanishing meanwhile must not fail the rest
            continue
    return json_response(
        {
            "kind": t.kind.list_kind,
            "apiVersion": t.kind.api_version,
            "metadata": {"resourceVersion": store.resource_version},
            "items": deleted,
        }
    )
