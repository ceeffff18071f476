"""Kubeconfig files for the control plane's clients, written 0600 (they hold keys or tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aifacility.embedded.controlplane.pki import KeyPair

CONTEXT = "aifacility"


def kubeconfig(server: str, ca: Path, *, client: KeyPair | None = None, token: str | None = None,
               user: str = "aifacility", namespace: str | None = None) -> dict[str, Any]:
    creds: dict[str, Any] = {}
    if client is not None:
        creds = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    if token is not None:
        creds = {"token": token}
    context: dict[str, Any] = {"cluster": CONTEXT, "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": CONTEXT, "context": context}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
