"""The figures of a GPU server's own GPUs (issue 16's usage part), with a fake NVML: what the node agent serves
under the DCGM exporter's names, which pod each GPU's energy is credited to, and that the accounting collector's
reader of the DCGM exporter takes it as it is."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from aifacility.accounting.dcgm import Sample, exporter_reader, parse
from aifacility.accounting.ledger import Ledger
from aifacility.accounting.pods import PodCollector
from aifacility.accounting.schema import measured_energy, usage
from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.nodeagent.agent import NodeAgent
from aifacility.embedded.nodeagent.devices import DeviceManager
from aifacility.embedded.nodeagent.gpumetrics import GpuMetricsServer, Holder, holders_of, read, render
from aifacility.embedded.nodeagent.hostgpus import HostGPU, host_node, with_host_node
from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.launcher.components import accounting_component, gpu_metrics_port
from aifacility.launcher.supervisor import free_port
from aifacility.launcher.up import UpOptions

FAC = load_facility()
T4 = HostGPU(0, "GPU-t4-0", "Tesla T4", 15360, 0)
T4B = HostGPU(1, "GPU-t4-1", "Tesla T4", 15360, 1)
A100 = HostGPU(2, "GPU-a100", "NVIDIA A100-SXM4-80GB", 81920, 2, mig_enabled=True)


class FakeNVML:
    """The figures pynvml gives per GPU (by UUID); energy is missing on the GPU `no_energy` names."""

    class NVMLError(Exception):
        pass

    def __init__(self, no_energy: str = "") -> None:
        self.no_energy = no_energy
        self.calls: list[str] = []
        self.lost = False

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if self.lost:
            raise self.NVMLError("GPU is lost")
        return uuid

    def nvmlDeviceGetUtilizationRates(self, h: str) -> Any:
        if h == A100.uuid:
            raise self.NVMLError("Not Supported")  # as NVML answers for a GPU in MIG mode
        return SimpleNamespace(gpu=87 if h == T4.uuid else 0, memory=40)

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return 61500 if h == T4.uuid else 30000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h: str) -> int:
        if h == self.no_energy:
            raise self.NVMLError("Not Supported")
        return 123456789  # mJ since the driver loaded

    def nvmlDeviceGetMemoryInfo(self, h: str) -> Any:
        return SimpleNamespace(total=16 * 2**30, used=3 * 2**30)


def test_figures_are_read_in_the_exporter_s_units_and_missing_ones_left_out() -> None:
    t4, t4b, a100 = read(FakeNVML(no_energy=T4B.uuid), [T4, T4B, A100])
    assert (t4.utilization_percent, t4.power_watts, t4.energy_millijoules, t4.memory_used_mib) == (
        87.0, 61.5, 123456789.0, 3072.0)
    assert t4b.energy_millijoules is None and t4b.utilization_percent == 0.0
    assert a100.utilization_percent is None and a100.power_watts == 30.0  # MIG: no utilisation, whole-GPU power
    text = render("host", [t4, t4b, a100], {})
    assert text.count("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{") == 2 and "# TYPE DCGM_FI_DEV_GPU_UTIL gauge" in text
    assert 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-t4-0",device="nvidia0",modelName="Tesla T4",Hostname="host"} 87' \
        in text


def test_a_gpu_s_energy_is_credited_to_the_one_pod_that_holds_it() -> None:
    readings = read(FakeNVML(), [T4, T4B, A100])
    holders = {T4.uuid: [Holder("aifacility", "jupyter-alice", "notebook")],
               T4B.uuid: [Holder("aifacility", "jupyter-bob", "notebook"), Holder("aifacility", "job-carol", "main")],
               A100.uuid: [Holder("aifacility", "jupyter-dana", "notebook")]}
    text = render("host", readings, holders)
    # What the accounting collector takes from a DCGM exporter: only alice's GPU is one pod's. The time-sliced
    # T4 is bob's and carol's at once and the A100 is in MIG mode: their pods keep the power-figure estimate.
    assert parse(text) == [Sample("aifacility", "jupyter-alice", T4.uuid, 123456789.0)]
    assert 'pod="jupyter-bob"' not in text and 'pod="jupyter-dana"' not in text


def test_label_values_are_escaped() -> None:
    odd = HostGPU(0, "GPU-x", 'Odd "GPU"\\name', 1024, 0)
    text = render("host", read(FakeNVML(), [odd]), {})
    assert 'modelName="Odd \\"GPU\\"\\\\name"' in text
    parse(text)  # still valid exposition text


def test_the_device_manager_says_which_pods_hold_which_real_gpu() -> None:
    served = host_node(FAC, [T4], replicas=2)
    manager = DeviceManager("host", {"nvidia.com/gpu": "2"}, served.devices)
    gpu = {"name": "notebook", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    manager.allocate("uid-alice", gpu)
    manager.allocate("uid-bob", {**gpu, "name": "main"})
    manager.allocate("uid-carol", {"name": "cpu-only"})
    assert manager.holders() == {T4.uuid: [("uid-alice", "notebook"), ("uid-bob", "main")]}
    pods = [{"metadata": {"uid": "uid-alice", "namespace": "aifacility", "name": "jupyter-alice"}}]
    # bob's pod is gone from the node: it holds nothing any more, whatever the manager still says
    assert holders_of(pods, manager.holders()) == {T4.uuid: [Holder("aifacility", "jupyter-alice", "notebook")]}
    manager.release("uid-bob")
    assert manager.holders() == {T4.uuid: [("uid-alice", "notebook")]}
    # registered with a MIG slice the GPUs no longer have: nothing to hand out, and nothing simulated
    stale = DeviceManager("host", {"nvidia.com/gpu": "2", "nvidia.com/mig-1g.10gb": "1"}, served.devices)
    mig = {"name": "nb", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}
    assert stale.allocate("uid-dana", mig) == {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}


async def test_the_endpoint_serves_what_nvml_reads_at_each_scrape() -> None:
    nvml = FakeNVML()
    holders = {T4.uuid: [Holder("aifacility", "jupyter-alice", "notebook")]}
    port = free_port()
    server = GpuMetricsServer(nvml, [T4], "host", lambda: holders, port)
    await server.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        samples = await asyncio.to_thread(exporter_reader([url]))  # the accounting collector's own reader
        assert [(s.pod, s.device, s.millijoules) for s in samples] == [("jupyter-alice", T4.uuid, 123456789.0)]
        holders.clear()  # alice's session ended: the GPU is nobody's
        assert await asyncio.to_thread(exporter_reader([url])) == []
        nvml.lost = True
        with pytest.raises(Exception, match="503"):
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5))
    finally:
        await server.stop()
    assert nvml.calls == ["init", "shutdown"]



def test_up_with_host_gpus_hands_their_figures_to_the_accounting_collector(tmp_path: Path) -> None:
    """`aifacility up --host-gpus`: one port, loopback only, given to the node agent to serve and to the
    collector to read as its DCGM exporter; no pod may reach it (it names every tenant's pods)."""
    opts = UpOptions(facility=demo_facility_path(), state_dir=tmp_path, host_gpus=True)
    port = gpu_metrics_port(opts)
    assert port and gpu_metrics_port(opts) == port  # the same across restarts while it is free
    assert gpu_metrics_port(dataclasses.replace(opts, host_gpus=False)) is None
    cluster = EmbeddedCluster(FAC, tmp_path)
    assert cluster.node_agent(gpu_metrics_port=port).argv[-2:] == ["--gpu-metrics-port", str(port)]
    assert "--gpu-metrics-port" not in cluster.node_agent().argv
    collector = accounting_component(opts, tmp_path / "logs", tmp_path / "kubeconfig", port)
    assert collector.argv[-2:] == ["--dcgm-url", f"http://127.0.0.1:{port}/metrics"]
    assert "--dcgm-url" not in accounting_component(opts, tmp_path / "logs", tmp_path / "kubeconfig").argv
    agent = NodeAgent(FAC, tmp_path, cluster.plane, gpu_metrics_port=port)
    assert port in agent.internal_ports()


async def test_the_collector_records_the_real_model_and_the_measured_energy(tmp_path: Path) -> None:
    """From NVML to the ledger: a session on this machine's T4 is recorded under the model NVML named (the host
    node's product label) with the energy the GPU's counter measured while the pod held it."""
    served = host_node(FAC, [T4])
    facility = with_host_node(FAC, served)
    nvml = FakeNVML()
    energy = {"mj": 5_000_000.0}
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: energy["mj"]  # type: ignore[method-assign]
    pod = {"metadata": {"uid": "u-alice", "name": "jupyter-alice", "namespace": "aifacility",
                        "labels": {"hub.jupyter.org/username": "alice", "aifacility.io/group": "physics",
                                   "component": "singleuser-server"}},
           "spec": {"nodeName": "host", "containers": [{"resources": {"requests": {"cpu": "1"},
                                                                       "limits": {"nvidia.com/gpu": "1"}}}]},
           "status": {"phase": "Running", "containerStatuses": [{"state": {"running": {
               "startedAt": "2026-12-01T10:00:00Z"}}}]}}
    port = free_port()
    server = GpuMetricsServer(nvml, [T4], "host", lambda: {T4.uuid: [Holder("aifacility", "jupyter-alice",
                                                                             "notebook")]}, port)
    await server.start()
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    nodes = [{"metadata": {"name": "host", "labels": facility.nodes[-1].labels}}]
    collector = PodCollector(ledger, facility, lambda: [pod], lambda: nodes,
                             read_energy=exporter_reader([f"http://127.0.0.1:{port}/metrics"]))
    try:
        t0 = datetime(2026, 12, 1, 10, 1, tzinfo=UTC).timestamp()
        await asyncio.to_thread(collector.sweep, t0)  # the baseline
        energy["mj"] += 90_000_000  # 90 kJ
        await asyncio.to_thread(collector.sweep, t0 + 1800)
        with ledger.engine.connect() as conn:
            models = {r.resource: r.model for r in conn.execute(select(usage))}
            (measured,) = conn.execute(select(measured_energy)).all()
    finally:
        ledger.close()
        await server.stop()
    assert models["gpu"] == "Tesla-T4"
    assert (measured.device, measured.joules) == (T4.uuid, 90_000.0)
