"""The versions of the control plane's parts, read from the one place that pins them: `gomod/go.mod`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

GOMOD_DIR = Path(__file__).resolve().parent / "gomod"


@dataclass(frozen=True)
class Versions:
    kubernetes: str  # e.g. v1.36.3
    kueue: str  # e.g. v0.19.2
    etcd: str  # e.g. v3.6.8

    @property
    def kubernetes_minor(self) -> tuple[str, str]:
        major, minor = self.kubernetes.lstrip("v").split(".")[:2]
        return major, minor


def _required(text: str, module: str) -> str:
    m = re.search(rf"^\s*{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not m:
        raise RuntimeError(f"{GOMOD_DIR / 'go.mod'} does not require {module}")
    return m.group(1)


@cache
def versions() -> Versions:
    text = (GOMOD_DIR / "go.mod").read_text()
    return Versions(kubernetes=_required(text, "k8s.io/kubernetes"), kueue=_required(text, "sigs.k8s.io/kueue"),
                    etcd=_required(text, "go.etcd.io/etcd/server/v3"))
