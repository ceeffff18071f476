"""Logins under load: 200 demo users log in through the OIDC flow (hub -> embedded IAM provider -> hub) at 4 per
second while 20 others spawn notebook servers, against the same facility with no load, in one run.

Prints the p95 of a login and of a hub page (`/hub/home` of a logged-in user, polled 4 times a second) in both
phases and their ratios, and how many logins and spawns failed (the target is none)."""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aifacility.facility.loader import demo_facility_path
from support.facility import RunningFacility, start_facility
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait

LOGINS, RATE, SPAWNS, BASELINE_LOGINS = 200, 4.0, 20, 40
PROBE_EVERY = 0.25
LOGIN_USERS = [f"load{i:03d}" for i in range(LOGINS + BASELINE_LOGINS)]
SPAWN_USERS = [f"spawn{i:02d}" for i in range(SPAWNS)]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


class Prober:
    """Times GET /hub/home for one logged-in user, every PROBE_EVERY seconds, until stopped."""

    def __init__(self, fac: RunningFacility, session: requests.Session) -> None:
        self.fac, self.session = fac, session
        self.times: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = self.session.get(f"{self.fac.url}/hub/home", timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                self.times.append(time.perf_counter() - t0)
            else:
                self.errors += 1
            self._stop.wait(max(0.0, PROBE_EVERY - (time.perf_counter() - t0)))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_login(fac: RunningFacility, user: str) -> float | None:
    t0 = time.perf_counter()
    try:
        oidc_login(fac.url, user)
    except (requests.RequestException, RuntimeError) as e:
        print(f"  login of {user} failed: {e}", flush=True)
        return None
    return time.perf_counter() - t0


def paced_logins(fac: RunningFacility, users: list[str], pool: ThreadPoolExecutor) -> list[float | None]:
    """Start one login every 1/RATE seconds, whether or not the earlier ones have finished (an arrival rate)."""
    start = time.perf_counter()
    futures = []
    for i, user in enumerate(users):
        time.sleep(max(0.0, start + i / RATE - time.perf_counter()))
        futures.append(pool.submit(timed_login, fac, user))
    return [f.result() for f in futures]


def spawn(fac: RunningFacility, user: str) -> float | None:
    try:
        return spawn_and_wait(fac.api, fac.url, user, {"profile": "cpu-small", "image": "ml"}, timeout=300)
    except (requests.RequestException, RuntimeError) as e:
        print(f"  spawn of {user} failed: {e}", flush=True)
        return None


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-login-load-") as tmp:
        base = Path(tmp)
        accounts = [{"username": u, "groups": ["physics"]} for u in LOGIN_USERS]
        accounts += [{"username": u, "groups": ["physics" if i % 2 else "ml"]} for i, u in enumerate(SPAWN_USERS)]
        (base / "users.yaml").write_text(yaml.safe_dump(accounts))
        # The demo's two CPU nodes hold 16 small sessions (2 cores, 8 GiB each): bigger nodes, so that all 20 fit.
        doc = yaml.safe_load(demo_facility_path().read_text())
        for node in doc["nodes"]:
            if node["name"].startswith("cpu-"):
                node.update(cpu="32", memory="192Gi")
        (base / "facility.yaml").write_text(yaml.safe_dump(doc))
        fac = start_facility(base / "facility", "--demo-users", str(base / "users.yaml"),
                             "--facility", str(base / "facility.yaml"))
        base_logins: list[float | None] = []
        load_logins: list[float | None] = []
        spawn_times: list[float | None] = []
        finished = False
        try:
            probe_session = oidc_login(fac.url, "alice")
            with ThreadPoolExecutor(4) as pool:  # spawns need IAM tokens: the spawners log in beforehand
                list(pool.map(lambda u: oidc_login(fac.url, u), SPAWN_USERS))
            timed_login(fac, LOGIN_USERS[-1])  # warm-up

            with ThreadPoolExecutor(16) as pool, Prober(fac, probe_session) as quiet:
                base_logins = paced_logins(fac, LOGIN_USERS[LOGINS:LOGINS + BASELINE_LOGINS - 1], pool)
            with ThreadPoolExecutor(48) as pool, Prober(fac, probe_session) as loaded:
                spawns = [pool.submit(spawn, fac, u) for u in SPAWN_USERS]
                load_logins = paced_logins(fac, LOGIN_USERS[:LOGINS], pool)
                spawn_times = [f.result() for f in spawns]
            finished = True
        finally:
            fac.stop()
            # Keep the facility's log for the reader of a failure: the temporary directory goes away.
            if not finished or None in base_logins + load_logins + spawn_times:
                kept = Path(tempfile.gettempdir()) / "bench_login_load-logs"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(fac.state_dir / "logs", kept)
                shutil.copy(fac.state_dir.parent / f"up-{fac.port}.log", kept / "up.log")
                print(f"some requests failed: the facility's logs are kept in {kept}")

    ok_base = [t for t in base_logins if t is not None]
    ok_load = [t for t in load_logins if t is not None]
    ok_spawn = [t for t in spawn_times if t is not None]
    rows = [("hub page /hub/home", quiet.times, loaded.times), ("login (OIDC flow)", ok_base, ok_load)]
    print(f"{'':22}{'p95 quiet':>11}{'p95 loaded':>12}{'ratio':>8}   (ms; {LOGINS} logins at {RATE:.0f}/s "
          f"while {SPAWNS} spawn)")
    for name, q, ld in rows:
        print(f"{name:22}{p95(q) * 1000:11.0f}{p95(ld) * 1000:12.0f}{p95(ld) / p95(q):8.2f}")
    print(f"failed: {len(load_logins) - len(ok_load)} of {LOGINS} logins under load, "
          f"{len(base_logins) - len(ok_base)} of {len(base_logins)} quiet ones, "
          f"{SPAWNS - len(ok_spawn)} of {SPAWNS} spawns, {quiet.errors + loaded.errors} hub page probes")
    if ok_spawn:
        print(f"spawns under load: median {statistics.median(ok_spawn):.1f} s, max {max(ok_spawn):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
