"""Benchmark of the interLink plugin against a real local SLURM.  Run: python tests/bench/bench_interlink.py

1. /create latency of the plugin against a raw `sbatch` of the very same script (p50 of each, interleaved);
   target: the plugin adds at most 10 ms.
2. One /status poll over 500 pods against one `squeue` per pod (what the upstream plugin does); target: under
   0.1 s, with a number of SLURM calls that does not grow with the number of pods.

Every SLURM command (the plugin's and the baseline's) goes through the same counting shim, so both pay the
same overhead and the calls can be counted. Jobs are submitted held (`--hold`), so that nothing runs and
SLURM's own scheduling does not disturb the timings. Ratios are against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from aifacility_interlink.client import PluginClient
from aifacility_interlink.localslurm import LocalSlurm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_pod(i: int) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    p = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"bench-{i}", "namespace": "bench", "uid": uid,
                     "annotations": {"slurm-job.vk.io/flags": "--hold"}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hi"],
                                 "resources": {"limits": {"cpu": "1", "memory": "100Mi"}}}]},
    }
    return {"pod": p, "container": [{"name": "main"}]}


def count_calls(calls: Path) -> Counter[str]:
    return Counter(calls.read_text().split()) if calls.exists() else Counter()


def start_plugin(work: Path, cfg: Path, port: int, slurm: LocalSlurm) -> subprocess.Popen[bytes]:
    with (work / "plugin.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "aifacility_interlink.cli", "serve", "--backend", "slurm", "--listen",
             f"127.0.0.1:{port}", "--data-root", str(work / "data"), "--runtime", "none", "--config", str(cfg),
             "--log-level", "warning"],
            env=slurm.env(), stdout=log, stderr=subprocess.STDOUT,
        )


def stop_all(proc: subprocess.Popen[bytes], slurm: LocalSlurm) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    subprocess.run(["scancel", "--partition", slurm.partition], env=slurm.env(), check=False)
    slurm.stop()


async def bench(work: Path, n_create: int, n_status: int) -> list[tuple[str, str, str, str]]:
    slurm = LocalSlurm(work / "slurm", cpus=8, memory_mb=16000)
    slurm.start()
    calls, shim = work / "calls.txt", work / "slurm-shim"
    shim.write_text(f'#!/bin/bash\necho "$1" >> {calls}\nexec "$@"\n')
    shim.chmod(0o755)
    cfg = work / "plugin.yaml"
    cfg.write_text(yaml.safe_dump({"slurm": {"command_prefix": [str(shim)]}}))
    port = free_port()
    proc = start_plugin(work, cfg, port, slurm)
    rows: list[tuple[str, str, str, str]] = []
    try:
        async with PluginClient(f"http://127.0.0.1:{port}") as c:
            for _ in range(100):
                try:
                    await c.ping()
                    break
                except Exception:  # not listening yet
                    await asyncio.sleep(0.1)
            # warm-up: first sbatch / first create pay one-off costs
            first = make_pod(0)
            await c.create(first)
            script = next((work / "data").glob("bench-*/job.slurm"))
            env = slurm.env()

            def raw_sbatch() -> float:
                t = time.perf_counter()
                subprocess.run([str(shim), "sbatch", "--parsable", str(script)], env=env, check=True,
                               capture_output=True)
                return time.perf_counter() - t

            raw_sbatch()
            plugin_t, raw_t = [], []
            pods = [first]
            for i in range(1, n_create + 1):
                p = make_pod(i)
                t = time.perf_counter()
                await c.create(p)
                plugin_t.append(time.perf_counter() - t)
                pods.append(p)
                raw_t.append(await asyncio.to_thread(raw_sbatch))
            p_plugin, p_raw = statistics.median(plugin_t) * 1e3, statistics.median(raw_t) * 1e3
            rows.append(("/create p50 (ms)", f"{p_plugin:.1f}", f"{p_raw:.1f} (raw sbatch)",
                         f"+{p_plugin - p_raw:.1f} ms (target <= 10)"))

            for i in range(len(pods), n_status):
                pods.append(make_pod(i))
                await c.create(pods[-1])
            pod_objs = [p["pod"] for p in pods[:n_status]]

            calls.write_text("")
            small = pod_objs[:50]
            await c.status(small)
            calls_small = sum(count_calls(calls).values())
            times = []
            for _ in range(5):
                calls.write_text("")
                t = time.perf_counter()
                statuses = await c.status(pod_objs)
                times.append(time.perf_counter() - t)
            calls_big = sum(count_calls(calls).values())
            assert len(statuses) == n_status
            jids = [s.JID for s in statuses]

            def per_pod_squeue() -> float:
                t = time.perf_counter()
                for jid in jids:
                    subprocess.run([str(shim), "squeue", "--noheader", "-a", "--states=all", "-O",
                                    "exit_code,StateCompact", "-j", jid], env=env, check=True,
                                   capture_output=True)
                return time.perf_counter() - t

            calls.write_text("")
            base_t = await asyncio.to_thread(per_pod_squeue)
            base_calls = sum(count_calls(calls).values())
            poll = statistics.median(times)
            rows.append((f"/status poll, {n_status} pods (s)", f"{poll:.3f}", f"{base_t:.3f} (squeue per pod)",
                         f"{base_t / poll:.0f}x faster (target < 0.1 s)"))
            rows.append((f"SLURM calls per poll, 50 / {n_status} pods", f"{calls_small} / {calls_big}",
                         f"50 / {base_calls}", "constant" if calls_small == calls_big else "GROWS"))
    finally:
        stop_all(proc, slurm)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--creates", type=int, default=40, help="timed /create calls (and as many raw sbatch)")
    ap.add_argument("--pods", type=int, default=500, help="pods in the /status poll")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-interlink-") as d:
        rows = asyncio.run(bench(Path(d), args.creates, max(args.pods, args.creates + 1)))
    head = ("metric", "plugin", "baseline (same run)", "result")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
