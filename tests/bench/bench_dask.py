"""Dask: the time from `new_cluster()` to 4 connected workers, through the facility's gateway (the scheduler and
each worker a pod, every worker admitted by Kueue in the user's group queue) against dask-gateway's own local
backend (the same gateway server, schedulers and workers as plain processes on this machine: no pods, no queue),
started in the same run. Alternating, ROUNDS clusters each; the ratio is what the facility adds.

Both run the same `dask scheduler` / `dask worker` from this environment with 1 core and 1 GiB per worker.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth, JupyterHubAuth

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aifacility.launcher.supervisor import free_port
from support.facility import start_facility
from support.oidc_login import oidc_login

ROUNDS = 5
WORKERS = 4
BIN = Path(sys.executable).parent

LOCAL_CONFIG = """
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.LocalBackend.clusters_directory = "{tmp}/clusters"
c.ClusterConfig.scheduler_cmd = ["{bin}/dask", "scheduler"]
c.ClusterConfig.worker_cmd = ["{bin}/dask", "worker"]
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.idle_timeout = 600
"""


def start_local_gateway(tmp: Path) -> tuple[subprocess.Popen[bytes], Gateway]:
    api, proxy = free_port(), free_port()
    config = tmp / "local_gateway_config.py"
    config.write_text(LOCAL_CONFIG.format(api=api, proxy=proxy, tmp=tmp, bin=BIN))
    proc = subprocess.Popen([str(BIN / "dask-gateway-server"), "-f", str(config)], cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=(tmp / "local_gateway.log").open("wb"))
    address = f"http://127.0.0.1:{proxy}"
    for _ in range(300):
        try:
            if requests.get(f"{address}/api/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the local dask-gateway-server exited: {(tmp / 'local_gateway.log').read_text()}")
        time.sleep(0.1)
    return proc, Gateway(address, proxy_address=f"gateway://127.0.0.1:{proxy}", auth=BasicAuth("bench"))


def four_workers(gateway: Gateway, label: str, **options: object) -> float:
    """Seconds from asking for a cluster to WORKERS connected workers; the cluster is then shut down."""
    t0 = time.perf_counter()
    cluster = gateway.new_cluster(**options)
    try:
        cluster.scale(WORKERS)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(WORKERS, timeout=300)
            took = time.perf_counter() - t0
    finally:
        cluster.shutdown()
        cluster.close()
    # Cyclic garbage is collected here, in the main thread: a dask-gateway `Gateway` collected on the client's
    # event-loop thread closes itself synchronously in `__del__` and deadlocks that loop (an upstream bug).
    gc.collect()
    print(f"  {label}: {took:.2f} s", file=sys.stderr, flush=True)
    return took


def wait_until_no_clusters(gateway: Gateway) -> None:
    for _ in range(600):
        if not gateway.list_clusters():
            return
        time.sleep(0.2)
    print("  (a cluster was still listed 2 minutes after its shutdown)", file=sys.stderr, flush=True)


def main() -> int:
    gc.disable()  # see four_workers
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        base = Path(tmp)
        fac = start_facility(base / "facility")
        local, local_gateway = start_local_gateway(base)
        try:
            oidc_login(fac.url, "alice")
            token = fac.api("POST", "/users/alice/tokens", json={"expires_in": 3600}).json()["token"]
            url = fac.api("GET", "/services/dask-gateway").json()["url"].rstrip("/")
            ours = Gateway(f"{url}/services/dask-gateway", auth=JupyterHubAuth(api_token=token),
                           proxy_address=f"gateway://127.0.0.1:{url.rsplit(':', 1)[1]}")
            runs: dict[str, Callable[[], float]] = {
                "facility (pods, Kueue)": lambda: four_workers(ours, "facility", group="ml", worker_cores=1,
                                                               worker_memory=1),
                "dask-gateway local": lambda: four_workers(local_gateway, "local"),
            }
            gateways = {"facility (pods, Kueue)": ours, "dask-gateway local": local_gateway}
            for name, run in runs.items():  # warm-up: imports, the first pods' start
                run()
                wait_until_no_clusters(gateways[name])
            times: dict[str, list[float]] = {name: [] for name in runs}
            for i in range(ROUNDS):
                for name in (list(runs) if i % 2 == 0 else list(reversed(runs))):
                    times[name].append(runs[name]())
                    wait_until_no_clusters(gateways[name])  # the next cluster does not compete with this one
        finally:
            local.terminate()
            local.wait(30)
            fac.stop()

    print(f"{'':24}{'p50 s':>8}{'max s':>8}   (new_cluster() to {WORKERS} connected workers, {ROUNDS} each, "
          "alternating)")
    for name, ts in times.items():
        print(f"{name:24}{statistics.median(ts):8.2f}{max(ts):8.2f}")
    ours_p50, base_p50 = statistics.median(times["facility (pods, Kueue)"]), statistics.median(
        times["dask-gateway local"])
    print(f"ratio at p50: {ours_p50 / base_p50:.2f} (the facility's pods and Kueue admission against local processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
