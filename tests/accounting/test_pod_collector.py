"""The pod collector against the real control plane and node agent: a job's MIG slice and CPU, recorded while it
runs and closed when it ends; a deleted pod closed at the last sweep that saw it; the collector killed (-9) and
restarted in the middle counts nothing twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from aifacility.accounting import report
from aifacility.accounting.ledger import Ledger
from aifacility.accounting.schema import usage
from aifacility.facility.loader import load_facility
from support.controlplane import Cluster, wait_for

NS = "aifacility"


def _pod(name: str, script: str, *, mig: bool) -> dict[str, Any]:
    facility = load_facility(None)
    ctn: dict[str, Any] = {"name": "main", "image": "python:3.12", "command": ["sh", "-c", script],
                           "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
    spec: dict[str, Any] = {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [ctn]}
    if mig:
        acc = facility.accelerator("mig-1g-10gb")
        ctn["resources"]["limits"] = {acc.resource: "1"}
        spec["nodeSelector"] = acc.node_selector
        spec["tolerations"] = [t.model_dump(exclude_none=True) for t in acc.tolerations]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {
                "aifacility.io/user": "alice", "aifacility.io/group": "physics", "aifacility.io/kind": "batch"}},
            "spec": spec}


def _collector(db: str, cluster: Cluster, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "aifacility.cli", "accounting", "collect", "--db", db, "--kubeconfig",
         str(cluster.kubeconfig), "--interval", "0.5"], stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _rows(db: str) -> dict[str, Any]:
    ledger = Ledger(db)
    with ledger.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(usage))}
    ledger.close()
    return rows


def test_pods_usage_is_recorded_once_through_a_collector_crash(cluster: Cluster, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    log = tmp_path / "collector.log"
    cluster.apply(_pod("acct-mig", "sleep 20", mig=True), _pod("acct-long", "sleep 300", mig=False))
    mig_pod = cluster.wait_phase(NS, "acct-mig", "Running")
    long_pod = cluster.wait_phase(NS, "acct-long", "Running")
    mig_uid, long_uid = mig_pod["metadata"]["uid"], long_pod["metadata"]["uid"]
    first = _collector(db, cluster, log)
    try:
        wait_for(lambda: f"pod:{mig_uid}/mig" in _rows(db) and f"pod:{long_uid}/cpu" in _rows(db), 60,
                 message=f"no records; collector log: {log.read_text() if log.exists() else ''}")
        rows = _rows(db)
        assert rows[f"pod:{mig_uid}/mig"].end_ts is None and rows[f"pod:{mig_uid}/mig"].model == "1g.10gb"
        assert rows[f"pod:{mig_uid}/cpu"].quantity == pytest.approx(0.25)
        assert rows[f"pod:{mig_uid}/memory"].quantity == pytest.approx(64 / 1024)
        assert (rows[f"pod:{mig_uid}/mig"].user_name, rows[f"pod:{mig_uid}/mig"].group_name) == ("alice", "physics")
        assert rows[f"pod:{mig_uid}/mig"].kind == "job" and rows[f"pod:{mig_uid}/mig"].site == "local"
    finally:
        first.send_signal(signal.SIGKILL)  # killed mid-run, as a crash would
        first.wait(10)
    done = cluster.wait_phase(NS, "acct-mig", "Succeeded", timeout=60)
    second = _collector(db, cluster, log)
    try:
        wait_for(lambda: _rows(db)[f"pod:{mig_uid}/mig"].end_ts is not None, 30, message="the ended pod stays open")
        time.sleep(1.5)  # a few sweeps that saw the long pod running
        cluster.kubectl("delete", "pod", "-n", NS, "acct-long", "--wait=true", "--timeout=60s")
        deleted_at = time.time()
        wait_for(lambda: _rows(db)[f"pod:{long_uid}/cpu"].end_ts is not None, 30, message="the deleted pod stays open")
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait(10)
    rows = _rows(db)
    assert len(rows) == 5  # cpu, memory, mig of one pod; cpu, memory of the other: nothing twice
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    started = datetime.fromisoformat(term["startedAt"].replace("Z", "+00:00")).timestamp()
    finished = datetime.fromisoformat(term["finishedAt"].replace("Z", "+00:00")).timestamp()
    mig_row = rows[f"pod:{mig_uid}/mig"]
    assert (mig_row.start_ts, mig_row.end_ts) == (started, finished)
    # closed at the last sweep that saw it running: before the delete returned, within a few sweeps of it
    assert deleted_at - 10 < rows[f"pod:{long_uid}/cpu"].end_ts <= deleted_at
    ledger = Ledger(db)
    day = datetime.fromtimestamp(started, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with ledger.engine.connect() as conn:
        by_user = report.build(conn, "user", day, day + timedelta(days=2), load_facility(None).accounting)
    ledger.close()
    mig = next(r for r in by_user.rows if r.key == "alice" and r.resource == "mig")
    assert mig.hours == pytest.approx((finished - started) / 3600, abs=2 / 3600)
    assert mig.gpu_equivalent_hours == pytest.approx(mig.hours / 7) and mig.energy_kwh > 0


def test_a_kueue_admitted_pod_counts_from_its_admission(cluster: Cluster, tmp_path: Path) -> None:
    """Kueue holds a group's quota from the admission: the record starts there, not at the container's start."""
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    pod = _pod("acct-queued", "sleep 1", mig=False)
    pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "physics"
    cluster.apply(pod)
    done = cluster.wait_phase(NS, "acct-queued", "Succeeded", timeout=90)
    uid = done["metadata"]["uid"]
    listed = json.loads(cluster.kubectl("get", "workloads.kueue.x-k8s.io", "-n", NS, "-o", "json").stdout)
    (workload,) = [w for w in listed["items"] if any(o["uid"] == uid for o in w["metadata"].get("ownerReferences", []))]
    reserved = next(c for c in workload["status"]["conditions"] if c["type"] == "QuotaReserved")
    admitted_at = datetime.fromisoformat(reserved["lastTransitionTime"].replace("Z", "+00:00")).timestamp()
    collector = subprocess.run(
        [sys.executable, "-m", "aifacility.cli", "accounting", "collect", "--db", db, "--kubeconfig",
         str(cluster.kubeconfig), "--once"], capture_output=True, text=True, timeout=120)
    assert collector.returncode == 0, collector.stderr
    row = _rows(db)[f"pod:{uid}/cpu"]
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    started = datetime.fromisoformat(term["startedAt"].replace("Z", "+00:00")).timestamp()
    assert row.start_ts == admitted_at <= started
    assert row.group_name == "physics"
    cluster.kubectl("delete", "pod", "-n", NS, "acct-queued", "--wait=false")


def test_admission_times_are_matched_to_their_pods() -> None:
    from aifacility.accounting.pods import admissions, pod_records

    def wl(owner: str, reserved: str) -> dict[str, Any]:
        return {"metadata": {"ownerReferences": [{"uid": owner}]},
                "status": {"conditions": [{"type": "QuotaReserved", "status": "True", "lastTransitionTime": reserved}]}}

    admitted = admissions([wl("job-1", "2026-12-01T10:00:00Z"), wl("pod-2", "2026-12-01T10:00:05Z"),
                           {"metadata": {"ownerReferences": [{"uid": "job-3"}]}, "status": {}}])  # not admitted
    assert set(admitted) == {"job-1", "pod-2"}

    def pod(uid: str, created: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"uid": uid, "creationTimestamp": created, "labels": {"aifacility.io/user": "a", **labels}},
                "spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"state": {"running": {"startedAt": "2026-12-01T10:00:30Z"}}}]}}

    facility = load_facility(None)

    def start(p: dict[str, Any]) -> str:
        return pod_records(p, {}, facility, admitted)[0].start.isoformat()

    # A Job's second pod, created long after the admission, counts from its own creation (no overlap).
    assert start(pod("p1", "2026-12-01T10:00:20Z", {"batch.kubernetes.io/controller-uid": "job-1"})) == \
        "2026-12-01T10:00:20+00:00"
    # A gated plain pod, created before its admission, counts from the admission.
    assert start(pod("pod-2", "2026-12-01T09:59:00Z", {})) == "2026-12-01T10:00:05+00:00"
    # Not admitted by Kueue: from its first container.
    assert start(pod("p3", "2026-12-01T09:00:00Z", {"controller-uid": "job-3"})) == "2026-12-01T10:00:30+00:00"
