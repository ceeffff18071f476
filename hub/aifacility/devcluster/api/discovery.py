"""Discovery documents: /version, /api, /apis and the per-group-version resource lists kubectl caches."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import kinds
from ..kinds import Kind
from .errors import json_response
from .state import API_GROUPS_KEY

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-aifacility-devcluster",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def resource_entries(kind: Kind) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [
        {
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
            **({"shortNames": list(kind.short_names)} if kind.short_names else {}),
            **({"categories": ["all"]} if kind.kind in ("Pod", "Service", "Job") else {}),
        }
    ]
    for sub in sorted(kind.subresources):
        verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
        entries.append(
            {
                "name": f"{kind.plural}/{sub}",
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": verbs,
            }
        )
    return entries


def group_versions(app: web.Application) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """group -> version -> APIResource entries, built-in kinds plus groups registered by extensions."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind in kinds.ALL_KINDS:
        out.setdefault(kind.group, {}).setdefault(kind.version, []).extend(resource_entries(kind))
    for (group, version), resources in app[API_GROUPS_KEY].items():
        out.setdefault(group, {}).setdefault(version, []).extend(resources)
    return out


def _group_doc(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


async def version(request: web.Request) -> web.Response:
    return json_response(SERVER_VERSION)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def core_versions(request: web.Request) -> web.Response:
    host = request.host
    return json_response(
        {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }
    )


async def core_resources(request: web.Request) -> web.Response:
    resources = group_versions(request.app)[""]["v1"]
    return json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})


async def group_list(request: web.Request) -> web.Response:
    groups = [_group_doc(g, list(v)) for g, v in group_versions(request.app).items() if g]
    return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


async def group(request: web.Request) -> web.Response:
    versions = group_versions(request.app).get(request.match_info["group"])
    if not versions or not request.match_info["group"]:
        raise web.HTTPNotFound()
    return json_response(
        {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(request.match_info["group"], list(versions))}
    )


async def group_version_resources(request: web.Request) -> web.Response:
    group_name, version_name = request.match_info["group"], request.match_info["version"]
    resources = group_versions(request.app).get(group_name, {}).get(version_name)
    if resources is None or not group_name:
        raise web.HTTPNotFound()
    return json_response(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group_name}/{version_name}",
            "resources": resources,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/version", version)
    app.router.add_get("/version/", version)
    for path in ("/healthz", "/readyz", "/livez"):
        app.router.add_get(path, health)
    app.router.add_get("/api", core_versions)
    app.router.add_get("/api/", core_versions)
    app.router.add_get("/api/v1", core_resources)
    app.router.add_get("/api/v1/", core_resources)
    app.router.add_get("/apis", group_list)
    app.router.add_get("/apis/", group_list)
    app.router.add_get("/apis/{group}", group)
    app.router.add_get("/apis/{group}/", group)
    app.router.add_get("/apis/{group}/{version}", group_version_resources)
    app.router.add_get("/apis/{group}/{version}/", group_version_resources)
