"""The HTCondor history collector: job ads as a schedd returns them (parsed by HTCondor's own ClassAd library) into
records, once, open while running and closed when the job leaves the queue. No schedd runs here (HTCondor's
daemons are not packaged for this machine): the live check is tests/interlink/test_htcondor.py's htcondor_live
test, which a site with a schedd runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import classad2

from aifacility.accounting.condor import CondorCollector, ad_records
from aifacility.accounting.ledger import Ledger

T0 = 1_796_000_000  # 2026-11-30T...Z


def ad(text: str) -> Any:
    return classad2.parseOne(text)


OURS = f'''
GlobalJobId = "ce01.example.org#4211.0#{T0 - 100}"
AifacilityUser = "alice"
AifacilityGroup = "physics"
RequestCpus = 4
RequestMemory = ifThenElse(MemoryUsage =!= undefined, MemoryUsage, 3072)
RequestGPUs = 1
'''


def test_a_completed_job_counts_every_run_up_to_its_completion() -> None:
    # Evicted once and restarted: 1800 s of wall clock in all, the last run started 600 s before completion.
    done = ad(OURS + f"JobStatus = 4\nJobCurrentStartDate = {T0 + 3000}\nCompletionDate = {T0 + 3600}\n"
                     f"EnteredCurrentStatus = {T0 + 3600}\nRemoteWallClockTime = 1800.0\n")
    cpu, mem, gpu = ad_records(done, "htc")
    assert (cpu.id, cpu.user, cpu.group, cpu.kind, cpu.site) == (
        f"htcondor:ce01.example.org#4211.0#{T0 - 100}/cpu", "alice", "physics", "offload", "htc")
    assert (cpu.quantity, mem.quantity, gpu.quantity) == (4.0, 3.0, 1.0)  # RequestMemory evaluated: MiB → GiB
    assert cpu.end is not None and cpu.end.timestamp() == T0 + 3600
    assert (cpu.end - cpu.start).total_seconds() == 1800


def test_running_removed_idle_and_foreign_jobs() -> None:
    running = ad(OURS + f"JobStatus = 2\nJobCurrentStartDate = {T0}\n")
    (cpu, _mem, _gpu) = ad_records(running, "htc")
    assert cpu.end is None and cpu.start.timestamp() == T0
    removed = ad(OURS + f"JobStatus = 3\nJobCurrentStartDate = {T0}\nEnteredCurrentStatus = {T0 + 90}\n"
                        "RemoteWallClockTime = 90.0\n")
    assert (ad_records(removed, "htc")[0].end - ad_records(removed, "htc")[0].start).total_seconds() == 90
    never_ran = ad(OURS + f"JobStatus = 3\nEnteredCurrentStatus = {T0}\nRemoteWallClockTime = 0.0\n")
    assert ad_records(never_ran, "htc") == []
    assert ad_records(ad(OURS + "JobStatus = 1\n"), "htc") == []  # idle: holds nothing
    foreign = ad(OURS.replace('AifacilityUser = "alice"\n', "") + f"JobStatus = 2\nJobCurrentStartDate = {T0}\n")
    assert ad_records(foreign, "htc") == []  # another user of the site


def test_sweeps_open_then_close_and_never_count_twice(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    answers = [[ad(OURS + f"JobStatus = 2\nJobCurrentStartDate = {T0}\n")],
               [ad(OURS + f"JobStatus = 4\nJobCurrentStartDate = {T0}\nCompletionDate = {T0 + 60}\n"
                          f"EnteredCurrentStatus = {T0 + 60}\nRemoteWallClockTime = 60.0\n")]]
    asked: list[float] = []

    def read(since: float) -> list[Any]:
        asked.append(since)
        return answers[min(len(asked), len(answers)) - 1]

    try:
        collector = CondorCollector(ledger, "htc", read)
        first = collector.sweep(now=T0 + 30)
        again = CondorCollector(ledger, "htc", read)  # a restarted collector
        second = again.sweep(now=T0 + 120)
        third = again.sweep(now=T0 + 180)
    finally:
        ledger.close()
    assert (first.inserted, second.closed, second.inserted, third.unchanged) == (3, 3, 0, 3)
    assert asked[1] == T0 + 30 - 600  # from the watermark, with a margin for late history


def test_an_unreachable_schedd_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "aifacility.cli", "accounting", "condor", "--once", "--site", "htc",
                           "--db", f"sqlite:///{tmp_path / 'l.sqlite'}"],
                          env={**os.environ, "CONDOR_CONFIG": "/dev/null"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("aifacility: HTCondor:") and "Traceback" not in done.stderr
