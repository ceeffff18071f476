"""Resuming a spawn that a hub restart lost: which pod it may take over, and with which token.

The spawn keeper (keeper.py) starts such a spawn again; the spawner then looks at the pod the lost spawn left.
It takes that pod over, rather than letting KubeSpawner replace it, only when the pod is alive and was made
from the same options. Then it keeps its Workload and its place in the Kueue queue, and its server keeps the
API token it was created with (JupyterHub keeps a token the spawner re-uses).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# On every notebook pod: a digest of the spawn's options, so a resumed spawn knows the pod is its own.
OPTIONS_DIGEST = "aifacility.io/user-options-sha256"


def options_digest(options: Mapping[str, Any] | None) -> str:
    return hashlib.sha256(json.dumps(dict(options or {}), sort_keys=True, default=str).encode()).hexdigest()


def adoptable_token(pod: Mapping[str, Any] | None, options: Mapping[str, Any] | None) -> str | None:
    """The API token of a pod (Kubernetes JSON) that a resumed spawn with `options` may take over, else None."""
    if not pod:
        return None
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    if (meta.get("annotations") or {}).get(OPTIONS_DIGEST) != options_digest(options):
        return None  # the user asked for something else this time: KubeSpawner replaces the pod
    for container in (pod.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == "JUPYTERHUB_API_TOKEN" and env.get("value"):
                return str(env["value"])
    return None
