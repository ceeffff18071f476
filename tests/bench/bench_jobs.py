"""Job submission: `JobsClient.submit` (what `aifacility jobs submit` calls: the jobs service checks the user's
groups and rules, then creates the Job) against creating the same Job with the `kubernetes` client directly, as
a cluster admin, in one run, alternating. Target: the service adds at most 50 ms at p95.

Both reach their server directly (the service on its own port, as sessions do; the API server). The jobs ask for
all of a group's MIG slices, so that one runs and the rest stay queued: no job's pod loads the machine.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.jobs.client import JobsClient
from aifacility.jobs.manifest import job_manifest, new_job_name
from aifacility.jobs.policy import plan
from aifacility.jobs.request import JobRequest
from support.facility import start_facility
from support.oidc_login import oidc_login

JOBS = 100
COMMAND = ["sleep", "600"]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        base = Path(tmp)
        doc = yaml.safe_load(demo_facility_path().read_text())
        doc["jobs"] = {"max_active_per_user": 4 * JOBS}
        (base / "facility.yaml").write_text(yaml.safe_dump(doc))
        facility = load_facility(base / "facility.yaml")
        fac = start_facility(base / "facility", "--facility", str(base / "facility.yaml"))
        try:
            oidc_login(fac.url, "alice")
            token = fac.api("POST", "/users/alice/tokens", json={"expires_in": 3600}).json()["token"]
            service = fac.api("GET", "/services/jobs").json()["url"].rstrip("/")
            jobs = JobsClient(f"{service}/services/jobs/api", token)
            batch = client.BatchV1Api(config.new_client_from_config(config_file=str(fac.kubeconfig)))
            request = JobRequest.model_validate(
                {"command": COMMAND, "group": "ml", "accelerator": {"kind": "mig", "name": "1g.10gb", "count": 4}})

            def ours() -> None:
                jobs.submit(COMMAND, group="ml", mig="1g.10gb:4", with_token=False)

            def direct() -> None:
                name = new_job_name("alice")
                job = job_manifest(facility, plan(facility, "alice", ["ml", "physics"], request, name), name,
                                   ["ml", "physics"])["job"]
                batch.create_namespaced_job(facility.namespace, job)

            runs = {"jobs service": ours, "kubernetes client": direct}
            for run in runs.values():  # warm-up: connections, the service's first claim checks
                run()
            times: dict[str, list[float]] = {name: [] for name in runs}
            for i in range(JOBS):
                order = list(runs) if i % 2 == 0 else list(reversed(runs))
                for name in order:
                    t0 = time.perf_counter()
                    runs[name]()
                    times[name].append(time.perf_counter() - t0)
        finally:
            fac.stop()

    print(f"{'':20}{'p50 ms':>9}{'p95 ms':>9}   ({JOBS} jobs each, alternating)")
    for name, ts in times.items():
        print(f"{name:20}{statistics.median(ts) * 1000:9.1f}{p95(ts) * 1000:9.1f}")
    ours_p95, base_p95 = p95(times["jobs service"]), p95(times["kubernetes client"])
    print(f"added by the service at p95: {(ours_p95 - base_p95) * 1000:.1f} ms (target: at most 50 ms); "
          f"ratio {ours_p95 / base_p95:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
