"""The part of /openapi/v3 kubectl reads: which PATCH operations accept the `fieldValidation` parameter.

kubectl (create/apply/replace, validation on by default) asks the server whether it validates fields itself
by looking for a PATCH operation with this kind's `x-kubernetes-group-version-kind` and a `fieldValidation`
query parameter. Declaring it lets kubectl skip client-side schema validation, for which it would otherwise need
the full /openapi/v2 document. Request bodies deliberately omit the strategic-merge media type, so kubectl apply
computes strategic patches from its compiled-in types (and JSON merge patches for the Kueue kinds), as it does
for a server without schemas.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from .. import kinds
from ..kinds import Kind
from .errors import json_response

_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation", "force")
]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _item_path(kind: Kind) -> str:
    base = "/" + _gv_path(kind.group, kind.version)
    return (
        f"{base}/namespaces/{{namespace}}/{kind.plural}/{{name}}"
        if kind.namespaced
        else f"{base}/{kind.plural}/{{name}}"
    )


def _gv_document(group: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in kinds.ALL_KINDS:
        if (kind.group, kind.version) != (group, version):
            continue
        gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
        paths[_item_path(kind)] = {
            "patch": {
                "operationId": f"patch{kind.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": _PARAMS,
                "requestBody": {
                    "content": {
                        "application/json-patch+json": {"schema": {"type": "object"}},
                        "application/merge-patch+json": {"schema": {"type": "object"}},
                    }
                },
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (aifacility development cluster)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _group_versions() -> list[tuple[str, str]]:
    return sorted({(k.group, k.version) for k in kinds.ALL_KINDS})


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:128].upper()


async def root(request: web.Request) -> web.Response:
    paths = {
        _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={_hash(_gv_document(g, v))}"}
        for g, v in _group_versions()
    }
    return json_response({"paths": paths})


async def group_version(request: web.Request) -> web.Response:
    tail = request.match_info["tail"].strip("/").split("/")
    if len(tail) == 2 and tail[0] == "api":
        group, version = "", tail[1]
    elif len(tail) == 3 and tail[0] == "apis":
        group, version = tail[1], tail[2]
    else:
        raise web.HTTPNotFound()
    if (group, version) not in _group_versions():
        raise web.HTTPNotFound()
    return json_response(_gv_document(group, version))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi/v3", root)
    app.router.add_get("/openapi/v3/", root)
    app.router.add_get("/openapi/v3/{tail:.+}", group_version)
