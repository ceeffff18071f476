"""Spawn time: POST /hub/api/users/{name}/server until the server answers, for our facility on the development
cluster (KubeSpawner, pods as sandboxed processes) and for a vanilla JupyterHub with SimpleLocalProcessSpawner,
measured in one run. Target: median ratio at most 1.25 (the pod machinery must not add seconds)."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.facility import start_facility
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait, stop_and_wait
from support.vanilla_hub import start_vanilla_hub

ROUNDS = 5


def measure(api, url: str, user: str, options: dict | None = None) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(ROUNDS):
        times.append(spawn_and_wait(api, url, user, options))
        stop_and_wait(api, user)
    return times


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-spawn-") as tmp:
        base = Path(tmp)
        vanilla = start_vanilla_hub(base / "vanilla")
        try:
            spawn_and_wait(vanilla.api, vanilla.url, "warmup")  # first start pays for imports
            stop_and_wait(vanilla.api, "warmup")
            v = measure(vanilla.api, vanilla.url, "bench")
        finally:
            vanilla.stop()
        fac = start_facility(base / "facility")
        try:
            # Facility users come from IAM: log in once (as a person would) so the hub holds bob's tokens.
            oidc_login(fac.url, "bob")
            spawn_and_wait(fac.api, fac.url, "bob", {"profile": "cpu-small"})
            stop_and_wait(fac.api, "bob")
            f = measure(fac.api, fac.url, "bob", {"profile": "cpu-small"})
        finally:
            fac.stop()
    mv, mf = statistics.median(v), statistics.median(f)
    print(f"{'':34}{'median':>9}{'min':>9}{'max':>9}   (seconds, {ROUNDS} spawns each)")
    print(f"{'vanilla JupyterHub (local process)':34}{mv:9.2f}{min(v):9.2f}{max(v):9.2f}")
    print(f"{'aifacility (devcluster pod)':34}{mf:9.2f}{min(f):9.2f}{max(f):9.2f}")
    ratio = mf / mv
    print(f"ratio aifacility/vanilla: {ratio:.2f}  (target <= 1.25: {'met' if ratio <= 1.25 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
