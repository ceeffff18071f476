"""Measured GPU energy: the pod collector reads a DCGM exporter's counters over HTTP and reports count the
measurement instead of the power figure. No GPU (so no DCGM) exists on our build machines: the exporter here is
a loopback HTTP server answering in dcgm-exporter's own text format (its metric, labels and units, as the GPU
operator deploys it with the Kubernetes pod mapping on); the live check belongs to a machine with a GPU."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from aifacility.accounting import render, report
from aifacility.accounting.dcgm import exporter_reader, parse
from aifacility.accounting.ledger import Ledger
from aifacility.accounting.pods import PodCollector
from aifacility.accounting.schema import measured_energy
from aifacility.facility.loader import load_facility

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()
UUID_A, UUID_B = "GPU-1c7f5a52-2f3e-8d0c-4b3a-0a1b2c3d4e5f", "GPU-9e8d7c6b-5a4f-3e2d-1c0b-a9b8c7d6e5f4"


def exporter_text(counters: dict[str, float]) -> str:
    """dcgm-exporter's /metrics: a T4 held by alice's notebook pod, an idle A100, and a MIG slice."""
    head = ("# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).\n"
            "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n")
    common = 'device="nvidia0",modelName="Tesla T4",Hostname="gpu-t4-01",DCGM_FI_DRIVER_VERSION="550.90.07"'
    return head + "".join([
        f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0",UUID="{UUID_A}",{common},container="notebook",'
        f'namespace="aifacility",pod="jupyter-alice"}} {counters["a"]}\n',
        f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="1",UUID="{UUID_B}",{common}}} {counters["b"]}\n',
        f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="2",UUID="GPU-mig",{common},GPU_I_PROFILE="1g.10gb",'
        f'GPU_I_ID="7",namespace="aifacility",pod="jupyter-bob"}} 123456789\n',
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n",
        f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="{UUID_A}",{common},namespace="aifacility",pod="jupyter-alice"}} 87\n',
    ])


@pytest.fixture
def exporter() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"counters": {"a": 5_000_000.0, "b": 1.0}, "up": True}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not state["up"]:
                self.send_error(503)
                return
            body = exporter_text(state["counters"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", state
    finally:
        server.shutdown()
        server.server_close()


def notebook_pod(phase: str = "Running", finished: str | None = None) -> dict[str, Any]:
    state = ({"terminated": {"startedAt": "2026-12-01T10:00:00Z", "finishedAt": finished}} if finished
             else {"running": {"startedAt": "2026-12-01T10:00:00Z"}})
    return {"metadata": {"uid": "u-alice", "name": "jupyter-alice", "namespace": "aifacility",
                         "labels": {"hub.jupyter.org/username": "alice", "aifacility.io/group": "physics",
                                    "component": "singleuser-server"}},
            "spec": {"nodeName": "gpu-t4-01", "containers": [{"resources": {"requests": {"cpu": "1"},
                                                                            "limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": phase, "containerStatuses": [{"state": state}]}}


def test_the_exporter_format_is_read_as_dcgm_writes_it() -> None:
    samples = parse(exporter_text({"a": 5e6, "b": 1.0}))
    # Only the GPU a pod holds; not the idle one, not a MIG slice (its counter is the whole GPU's).
    assert [(s.namespace, s.pod, s.device, s.millijoules) for s in samples] == [
        ("aifacility", "jupyter-alice", UUID_A, 5e6)]


def test_measured_energy_replaces_the_estimate(exporter: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, state = exporter
    facility = load_facility(None)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    pods = [notebook_pod()]
    nodes = [{"metadata": {"name": "gpu-t4-01", "labels": {"nvidia.com/gpu.product": "Tesla-T4"}}}]
    collector = PodCollector(ledger, facility, lambda: pods, lambda: nodes, read_energy=exporter_reader([url]))
    try:
        collector.sweep(T0 + 60)  # the first sample is the baseline
        state["counters"]["a"] += 90_000_000  # 90 kJ
        collector.sweep(T0 + 1860)
        state["up"] = False  # an exporter that is down costs its samples, not the sweep
        collector.sweep(T0 + 2400)
        state["up"] = True
        state["counters"]["a"] += 36_000_000
        pods[0] = notebook_pod("Succeeded", finished="2026-12-01T11:00:00Z")
        collector.sweep(T0 + 3700)  # ended: it held the GPU up to now, so this rise is its own
        pods.clear()
        state["counters"]["a"] += 1e9
        collector.sweep(T0 + 3800)  # gone: the GPU's later energy is not alice's
        with ledger.engine.connect() as conn:
            (row,) = conn.execute(select(measured_energy)).all()
            rep = report.build(conn, "user", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC),
                               facility.accounting, now=datetime.fromtimestamp(T0 + 7200, UTC))
    finally:
        ledger.close()
    assert (row.record_id, row.device, row.joules) == ("pod:u-alice/gpu", UUID_A, 126_000.0)
    gpu = next(r for r in rep.rows if r.resource == "gpu")
    assert gpu.hours == pytest.approx(1.0)  # 10:00 to 11:00
    assert gpu.measured_energy_kwh == pytest.approx(0.035)  # 126 kJ, not the T4's 70 W figure (0.07 kWh)
    assert gpu.energy_kwh == pytest.approx(0.035)
    assert gpu.co2e_kg == pytest.approx(0.035 * facility.accounting.grid_gco2e_per_kwh / 1000)
    cpu = next(r for r in rep.rows if r.resource == "cpu")
    assert cpu.measured_energy_kwh == 0 and cpu.energy_kwh == pytest.approx(facility.accounting.power_watts["cpu"]
                                                                            / 1000)
    assert "0.035\nmeasured" in render.to_html(rep, {})


def test_a_measured_record_split_by_the_period_gets_its_share(exporter: tuple[str, dict[str, Any]],
                                                              ledger_url: str) -> None:
    url, state = exporter
    facility = load_facility(None)
    ledger = Ledger(ledger_url)  # SQLite and PostgreSQL
    pods = [notebook_pod()]
    nodes = [{"metadata": {"name": "gpu-t4-01", "labels": {}}}]
    collector = PodCollector(ledger, facility, lambda: pods, lambda: nodes, read_energy=exporter_reader([url]))
    try:
        collector.sweep(T0)
        state["counters"]["a"] += 72_000_000
        pods[0] = notebook_pod("Succeeded", finished="2026-12-01T11:00:00Z")
        collector.sweep(T0 + 3600)  # ended: the rise up to now was its own
        with ledger.engine.connect() as conn:
            half = report.build(conn, "user", datetime(2026, 12, 1, 10, 30, tzinfo=UTC),
                                datetime(2026, 12, 2, tzinfo=UTC), facility.accounting)
    finally:
        ledger.close()
    gpu = next(r for r in half.rows if r.resource == "gpu")
    assert gpu.hours == pytest.approx(0.5)
    assert gpu.measured_energy_kwh == pytest.approx(0.01)  # half of the 72 kJ = 0.02 kWh
