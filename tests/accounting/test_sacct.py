"""The sacct collector on a real SLURM with real accounting (slurmdbd on MariaDB): what the site recorded is what the
ledger holds, once, through a collector killed with -9 and restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.sacct import SacctCollector, job_records, parse_tres, run_sacct
from aifacility_interlink.backends.slurm import accounting_comment
from aifacility_interlink.localslurm import LocalSlurm
from support.controlplane import wait_for
from support.ledger import ledger_rows

ALICE = {"aifacility.io/user": "alice", "aifacility.io/group": "physics"}


@pytest.fixture(scope="module")
def accounted_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm-acct"), accounting=True, min_job_age=600)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def sbatch(cluster: LocalSlurm, *flags: str, command: str) -> str:
    done = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", *flags, "--wrap", command],
                          env=cluster.env(),
                          capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


def sacct_row(cluster: LocalSlurm, job: str) -> dict[str, str]:
    fields = ["State", "Start", "End", "ElapsedRaw"]
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job, "-o", ",".join(fields)],
                         env={**cluster.env(), "TZ": "UTC"}, capture_output=True, text=True, timeout=30).stdout
    return dict(zip(fields, out.strip().split("|"), strict=True)) if out.strip() else {}


def test_tres_and_comments_read_as_the_ledger_counts() -> None:
    assert parse_tres("billing=2,cpu=2,gres/gpu=1,gres/gpu:a100=1,mem=1536M,node=1") == [
        ("cpu", "", 2.0), ("memory", "", 1.5), ("gpu", "a100", 1.0)]
    assert parse_tres("cpu=4,mem=2G,gres/gpu=2") == [("cpu", "", 4.0), ("memory", "", 2.0), ("gpu", "", 2.0)]
    line = "77|leonardo|aifacility,user=alice,group=physics,pod=u-1|COMPLETED|2026-12-01T10:00:00|" \
           "2026-12-01T10:30:00|cpu=8,mem=16G"
    cpu, mem = job_records(line, "hpc")
    assert (cpu.id, cpu.user, cpu.group, cpu.kind, cpu.site, cpu.quantity) == (
        "slurm:leonardo:77/cpu", "alice", "physics", "offload", "hpc", 8.0)
    assert (cpu.end - cpu.start).total_seconds() == 1800 and mem.quantity == 16.0
    assert cpu.start.utcoffset() is not None and cpu.start.hour == 10  # sacct ran with TZ=UTC
    # Not the facility's job, not started, or a line sacct did not write in our format: nothing.
    assert job_records(line.replace("aifacility,", "someone-else,"), "hpc") == []
    assert job_records("78|leonardo|aifacility,user=bob|PENDING|Unknown|Unknown|cpu=1", "hpc") == []
    assert job_records("garbage", "hpc") == []
    # A running job is an open record.
    (running,) = job_records("79|c|aifacility,user=bob,group=ml|RUNNING|2026-12-01T10:00:00|Unknown|cpu=1", "hpc")
    assert running.end is None


def test_the_plugin_marks_jobs_with_whose_they_are() -> None:
    assert accounting_comment(ALICE, "uid-1") == "--comment=aifacility,user=alice,group=physics,pod=uid-1"
    assert accounting_comment({"hub.jupyter.org/username": "bob", "kueue.x-k8s.io/queue-name": "ml"}, "u") == \
        "--comment=aifacility,user=bob,group=ml,pod=u"
    # Nothing in a label can break the #SBATCH line or add a field.
    assert accounting_comment({"aifacility.io/user": "a b,group=x"}, "u") == \
        "--comment=aifacility,user=a_b_group_x,group=,pod=u"


def test_sacct_jobs_are_recorded_once_through_a_collector_killed_and_restarted(
        accounted_slurm: LocalSlurm, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ours = accounting_comment(ALICE, "pod-done")
    done = sbatch(accounted_slurm, ours, "--cpus-per-task=2", "--mem=300M", "--gres=gpu:1", command="sleep 2")
    running = sbatch(accounted_slurm, accounting_comment(ALICE, "pod-long"), "--mem=100M", command="sleep 25")
    other = sbatch(accounted_slurm, "--mem=100M", command="true")  # another user of the site: not ours
    wait_for(lambda: sacct_row(accounted_slurm, done).get("State") == "COMPLETED", 60, message="the first job to end")
    wait_for(lambda: sacct_row(accounted_slurm, running).get("State") == "RUNNING", 60, message="the long job to run")
    wait_for(lambda: sacct_row(accounted_slurm, other).get("State") == "COMPLETED", 60, message="the other job")

    cmd = [sys.executable, "-m", "aifacility.cli", "accounting", "sacct", "--db", url, "--site", "hpc",
           "--interval", "1"]
    env = accounted_slurm.env()
    collector = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = wait_for(lambda: len(ledger_rows(url)) >= 5 and ledger_rows(url), 60, message="the first sweep")
    finally:
        os.kill(collector.pid, signal.SIGKILL)  # killed mid-run: no goodbye
        collector.wait(10)
    cluster = accounted_slurm.cluster
    assert set(first) == {f"slurm:{cluster}:{done}/{r}" for r in ("cpu", "memory", "gpu")} | {
        f"slurm:{cluster}:{running}/{r}" for r in ("cpu", "memory")}
    cpu = first[f"slurm:{cluster}:{done}/cpu"]
    assert (cpu.user_name, cpu.group_name, cpu.kind, cpu.site, cpu.quantity) == ("alice", "physics", "offload", "hpc",
                                                                                  2.0)
    assert first[f"slurm:{cluster}:{done}/memory"].quantity == pytest.approx(300 / 1024)
    assert first[f"slurm:{cluster}:{done}/gpu"].quantity == 1.0
    row = sacct_row(accounted_slurm, done)
    assert cpu.end_ts - cpu.start_ts == int(row["ElapsedRaw"])  # the site's own elapsed time, to the second
    assert first[f"slurm:{cluster}:{running}/cpu"].end_ts is None  # still running: open

    wait_for(lambda: sacct_row(accounted_slurm, running).get("State") == "COMPLETED", 60,
             message="the long job to end")
    again = subprocess.run([*cmd, "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    after = ledger_rows(url)
    assert set(after) == set(first)  # nothing twice, nothing lost
    long_cpu = after[f"slurm:{cluster}:{running}/cpu"]
    assert long_cpu.end_ts - long_cpu.start_ts == int(sacct_row(accounted_slurm, running)["ElapsedRaw"])
    assert after[f"slurm:{cluster}:{done}/cpu"].end_ts == cpu.end_ts  # a closed record is never moved
    # A third sweep, in-process, finds nothing new.
    ledger = Ledger(url)
    try:
        result = SacctCollector(ledger, "hpc", run_sacct(env=env)).sweep()
    finally:
        ledger.close()
    assert (result.inserted, result.closed) == (0, 0) and result.unchanged == 5


def test_an_unreachable_site_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "aifacility.cli", "accounting", "sacct", "--once", "--site", "hpc",
                           "--db", f"sqlite:///{tmp_path / 'l.sqlite'}", "--via", str(tmp_path / "no-ssh")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("aifacility: cannot run sacct:") and "no-ssh" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_pod_collector_leaves_batch_accounted_sites_to_sacct() -> None:
    from aifacility.accounting.pods import pod_records
    from aifacility.facility.loader import load_facility

    facility = load_facility(None)  # the demo facility: hpc is batch-accounted, htc is not
    assert facility.accounting.batch_accounted_sites == ["hpc"]
    running = {"containerStatuses": [{"state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}}],
               "phase": "Running"}

    def offloaded_to(node: str) -> dict[str, Any]:
        return {"metadata": {"uid": node, "labels": ALICE}, "status": running,
                "spec": {"nodeName": node, "containers": [{"resources": {"requests": {"cpu": "1"}}}]}}

    nodes = {"vk-hpc": {"aifacility.io/site": "hpc"}, "vk-htc": {"aifacility.io/site": "htc"}}
    assert pod_records(offloaded_to("vk-hpc"), nodes, facility) == []
    (htc,) = pod_records(offloaded_to("vk-htc"), nodes, facility)
    assert (htc.kind, htc.site, htc.user) == ("offload", "htc", "alice")


def test_slurmdbd_moves_to_another_port_when_its_port_was_taken(tmp_path: Path) -> None:
    """Another process binding slurmdbd's port between the configuration and slurmdbd's start (what a client's
    ephemeral port does on a busy machine) costs a retry on a new port, not a failed start."""
    cluster = LocalSlurm(tmp_path / "slurm", accounting=True)
    spawn = cluster._spawn
    taken: list[socket.socket] = []

    def spawn_after_taking_the_port(name: str, argv: list[str]) -> None:
        if name == "slurmdbd" and not taken:
            s = socket.socket()
            s.bind(("127.0.0.1", cluster._dbd_port))  # bound, not listening: like a client's ephemeral port
            taken.append(s)
        spawn(name, argv)

    cluster._spawn = spawn_after_taking_the_port  # type: ignore[method-assign]
    try:
        cluster.start()
        [s] = taken
        assert cluster._dbd_port != s.getsockname()[1]
        assert "Address already in use" in (tmp_path / "slurm" / "log" / "slurmdbd.log").read_text()
        for conf, key in (("slurmdbd.conf", "DbdPort"), ("slurm.conf", "AccountingStoragePort")):
            assert f"{key}={cluster._dbd_port}\n" in (tmp_path / "slurm" / "etc" / conf).read_text()
        listed = subprocess.run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=cluster.env(),
                                capture_output=True, text=True, timeout=30)
        assert cluster.cluster in listed.stdout.split()
    finally:
        cluster.stop()
        for s in taken:
            s.close()
