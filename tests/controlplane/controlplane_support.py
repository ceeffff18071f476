"""Start the embedded cluster's control plane for tests, and run kubectl against it."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane import build
from aifacility.facility import load_facility
from aifacility.launcher.supervisor import Supervisor


@dataclass
class Cluster:
    embedded: EmbeddedCluster
    state_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.embedded.plane.admin_kubeconfig

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=60)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc

    def get(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "-o", "json", *args).stdout))

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input="\n".join(json.dumps(o) for o in objects))


@contextlib.contextmanager
def start_cluster(state_dir: Path) -> Iterator[Cluster]:
    build.build(quiet=True)
    embedded = EmbeddedCluster(load_facility(None), state_dir)
    sup = Supervisor()
    try:
        for component in embedded.components():
            sup.start(component, timeout=120)
        yield Cluster(embedded, state_dir)
    finally:
        sup.stop()
