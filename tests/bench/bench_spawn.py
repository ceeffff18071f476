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

ROUNDS = 8


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-spawn-") as tmp:
        base = Path(tmp)
        vanilla = start_vanilla_hub(base / "vanilla")
        fac = start_facility(base / "facility")
        try:
            # Facility users come from IAM: log in once (as a person would) so the hub holds bob's tokens.
            oidc_login(fac.url, "bob")
            runs = {
                "vanilla": lambda: spawn_and_wait(vanilla.api, vanilla.url, "bench"),
                "facility": lambda: spawn_and_wait(fac.api, fac.url, "bob", {"profile": "cpu-small"}),
            }
            stops = {"vanilla": lambda: stop_and_wait(vanilla.api, "bench"),
                     "facility": lambda: stop_and_wait(fac.api, "bob")}
            for name in runs:  # the first start of each pays for imports and caches
                runs[name]()
                stops[name]()
            times: dict[str, list[float]] = {"vanilla": [], "facility": []}
            # Alternate, swapping which goes first each round, so the machine's noise hits both alike.
            for i in range(ROUNDS):
                for name in (("vanilla", "facility") if i % 2 == 0 else ("facility", "vanilla")):
                    times[name].append(runs[name]())
                    stops[name]()
        finally:
            fac.stop()
            vanilla.stop()
    v, f = times["vanilla"], times["facility"]
    mv, mf = statistics.median(v), statistics.median(f)
    print(f"{'':34}{'median':>9}{'min':>9}{'max':>9}   (seconds, {ROUNDS} spawns each, alternating)")
    print(f"{'vanilla JupyterHub (local process)':34}{mv:9.2f}{min(v):9.2f}{max(v):9.2f}")
    print(f"{'aifacility (pod on the embedded cluster)':34}{mf:9.2f}{min(f):9.2f}{max(f):9.2f}")
    ratio = mf / mv
    print(f"ratio aifacility/vanilla: {ratio:.2f}  (target <= 1.25: {'met' if ratio <= 1.25 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
