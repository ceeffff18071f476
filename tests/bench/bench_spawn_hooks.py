"""Cost of the spawner's hooks, in one run:

1. per spawn, FacilitySpawner's profile handling (per-user rendering from the facility file, validation of the
   choice, quota check+reserve in sqlite, release) against plain KubeSpawner's profile handling
   (`load_user_options` over a static `profile_list` with the same profiles); prints the ratio;
2. the spawn form rendered for a facility with 200 profiles (target: well under a second).

No cluster is involved: the kubeconfig points at a closed port and availability figures are pre-cached.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

ROUNDS = 300
FORM_ROUNDS = 5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubeconfig(tmp: Path) -> None:
    path = tmp / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{_closed_port()}"}}}}]
users: [{{name: u, user: {{token: bench}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    os.environ["KUBECONFIG"] = str(path)
    import kubernetes_asyncio.config.kube_config as kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)


def _user(name: str, *groups: str) -> Any:
    return SimpleNamespace(name=name, id=1, url=f"/user/{name}/", escaped_name=name,
                           groups=[SimpleNamespace(name=g) for g in groups])


def _big_facility(tmp: Path, n: int) -> Path:
    from aifacility.facility import load_facility

    data = load_facility().model_dump(mode="json", exclude_none=True)
    accels = [a["name"] for a in data["accelerators"]]
    data["profiles"] = [
        {"name": f"p-{i:03d}", "display_name": f"Profile {i}", "description": f"Generated profile {i}",
         "images": ["ml", "hep"], "cpu": str(1 + i % 8), "memory": f"{4 + i % 16}Gi",
         "groups": ["ml"] if i % 2 else [], "default": i == 0,
         **({"accelerator": {"name": accels[i % len(accels)]}, "queueable": True} if i % 3 else {})}
        for i in range(n)]
    path = tmp / "facility-200.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_facility(path)  # must validate
    return path


async def bench(tmp: Path) -> None:
    from kubespawner import KubeSpawner
    from traitlets.config import Config

    from aifacility.facility import load_facility
    from aifacility.spawner import FacilitySpawner, configure, profiles
    from aifacility.spawner import spawner as spawner_module
    from aifacility.spawner.availability import AvailabilityCache

    facility = load_facility()
    c = Config()
    configure(c, facility, data_dir=str(tmp))
    alice = _user("alice", "physics", "ml")

    # Availability figures as the cluster would give them, cached for the whole run.
    free = {a.name: (1, 4) for a in facility.accelerators}

    async def fetch_never() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        raise AssertionError("the bench must not read the cluster")

    def precache(key: str, fac: Any) -> None:
        cache = AvailabilityCache(fac, ttl=1e9)
        cache._value, cache._at = free, time.monotonic()
        spawner_module._AVAILABILITY[key] = cache

    precache("", facility)
    precache(os.environ.get("AIFACILITY_FACILITY", ""), facility)

    ours = FacilitySpawner(config=c, user=alice, _mock=True)
    ours.availability_ttl = 1e9
    ours.user_options = {"profile": "mig-1g-10gb", "image": "ml"}

    static_list = profiles.render_profile_list(facility, ["physics", "ml"], free)
    plain = KubeSpawner(user=alice, _mock=True)
    plain.profile_list = static_list
    plain.user_options = {"profile": "mig-1g-10gb", "image": "ml"}

    async def plain_once() -> None:
        await plain.load_user_options()

    async def ours_once() -> None:
        profile = ours.chosen_profile()
        await ours.load_user_options()
        await ours.reserve(profile)
        await ours.release()

    for fn in (plain_once, ours_once):  # warm up
        for _ in range(10):
            await fn()
    t_plain: list[float] = []
    t_ours: list[float] = []
    for _ in range(ROUNDS):  # interleaved, so machine noise hits both alike
        t0 = time.perf_counter()
        await plain_once()
        t1 = time.perf_counter()
        await ours_once()
        t2 = time.perf_counter()
        t_plain.append(t1 - t0)
        t_ours.append(t2 - t1)
    mp, mo = statistics.median(t_plain), statistics.median(t_ours)
    print(f"profile handling per spawn, median of {ROUNDS}: KubeSpawner {mp * 1e3:.2f} ms, "
          f"FacilitySpawner (render + validate + quota reserve/release) {mo * 1e3:.2f} ms, ratio {mo / mp:.1f}")

    # Quota reserve+release alone: the part that touches the disk (sqlite, fsync).
    t_q = []
    profile = ours.chosen_profile()
    for _ in range(50):
        t0 = time.perf_counter()
        await ours.reserve(profile)
        await ours.release()
        t_q.append(time.perf_counter() - t0)
    print(f"quota reserve+release alone, median of 50: {statistics.median(t_q) * 1e3:.2f} ms")

    big = _big_facility(tmp, 200)
    c2 = Config()
    configure(c2, load_facility(big), facility_path=str(big), data_dir=str(tmp))
    form_spawner = FacilitySpawner(config=c2, user=alice, _mock=True)
    precache(str(big), load_facility(big))
    times = []
    html = ""
    for _ in range(FORM_ROUNDS):
        t0 = time.perf_counter()
        html = await form_spawner._render_options_form_dynamically(form_spawner)
        times.append(time.perf_counter() - t0)
    shown = html.count('name="profile"')
    print(f"spawn form with 200 profiles ({shown} shown to alice, {len(html) // 1024} KiB): "
          f"median {statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms (target well under 1 s)")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-spawn-hooks-") as tmp:
        _kubeconfig(Path(tmp))
        asyncio.run(bench(Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
