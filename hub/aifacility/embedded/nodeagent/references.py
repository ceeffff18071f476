"""The objects a pod needs before it starts (Secrets, ConfigMaps, claims, a service-account token), fetched one
by one as the kubelet fetches them: a node may only read what the pods bound to it reference."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

from aifacility.embedded.kubeclient import ApiError, KubeClient

PATHS = {"Secret": "secrets", "ConfigMap": "configmaps", "PersistentVolumeClaim": "persistentvolumeclaims"}
TOKEN_SECONDS = 3600


def volume_references(pod: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, name) of every Secret and ConfigMap the pod's volumes render: what a running pod sees change."""
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if "secret" in vol:
            yield "Secret", vol["secret"].get("secretName", "")
        if "configMap" in vol:
            yield "ConfigMap", vol["configMap"].get("name", "")
        for source in (vol.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                yield "Secret", source["secret"].get("name", "")
            if "configMap" in source:
                yield "ConfigMap", source["configMap"].get("name", "")


def references(pod: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, name) of every Secret, ConfigMap and claim the pod's volumes and environment name."""
    spec = pod.get("spec") or {}
    yield from volume_references(pod)
    for vol in spec.get("volumes") or []:
        if "persistentVolumeClaim" in vol:
            yield "PersistentVolumeClaim", vol["persistentVolumeClaim"].get("claimName", "")
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in c.get("env") or []:
            ref = env.get("valueFrom") or {}
            if "secretKeyRef" in ref:
                yield "Secret", ref["secretKeyRef"].get("name", "")
            if "configMapKeyRef" in ref:
                yield "ConfigMap", ref["configMapKeyRef"].get("name", "")
        for src in c.get("envFrom") or []:
            if "secretRef" in src:
                yield "Secret", src["secretRef"].get("name", "")
            if "configMapRef" in src:
                yield "ConfigMap", src["configMapRef"].get("name", "")


def token_audiences(pod: Mapping[str, Any]) -> list[str] | None:
    """The audiences of the pod's projected service-account token (None: the pod has none)."""
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        for source in (vol.get("projected") or {}).get("sources") or []:
            if "serviceAccountToken" in source:
                aud = source["serviceAccountToken"].get("audience")
                return [aud] if aud else []
    return None


async def _get(client: KubeClient, path: str) -> dict[str, Any] | None:
    # The Node authorizer learns of a pod's references from its own watch; right after the pod is bound it
    # may not know them yet (403), so a refusal is retried for a few seconds before it counts.
    for attempt in range(20):
        try:
            return await client.get(path)
        except ApiError as e:
            if e.status != 403 or attempt == 19:
                raise
            await asyncio.sleep(0.25)
    return None


async def prefetch(client: KubeClient, pod: Mapping[str, Any]) -> tuple[dict[tuple[str, str], dict[str, Any]], str]:
    """The referenced objects that exist (a missing one is the pod's error to report, not ours), and a token."""
    meta = pod["metadata"]
    ns = meta["namespace"]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, name in set(references(pod)):
        if not name:
            continue
        obj = await _get(client, f"/api/v1/namespaces/{ns}/{PATHS[kind]}/{name}")
        if obj is not None:
            out[(kind, name)] = obj
    token = ""
    audiences = token_audiences(pod)
    if audiences is not None:
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "audiences": audiences, "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}}
        for attempt in range(20):
            try:
                body = await client.create(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", request)
                token = str((body.get("status") or {}).get("token") or "")
                break
            except ApiError as e:
                if e.status != 403 or attempt == 19:
                    raise
                await asyncio.sleep(0.25)
    return out, token
