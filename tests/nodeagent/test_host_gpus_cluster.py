"""A GPU server's own GPUs on the real control plane (issue 16), with NVML faked in the node agent's process
(tests/support/fakenvml): the machine registers as node `host` with its T4, a pod given the GPU gets its UUID and
a pod without gets none, the node agent's GPU figures name the pod that holds the GPU and no longer do once it is
gone, and no pod can reach those figures. What only a real driver can show (device files, a CUDA computation)
is tests/device/check-gpu.sh's."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifacility.accounting.dcgm import parse
from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane import build
from aifacility.embedded.nodeagent.hostgpus import discover, host_node, with_host_node
from aifacility.facility import load_facility
from aifacility.facility.model import Facility
from aifacility.launcher.supervisor import Supervisor, free_port

pytestmark = pytest.mark.slow

FAKE_NVML = Path(__file__).resolve().parents[1] / "support" / "fakenvml"
T4 = "GPU-7e4a1c2b-0d3f-4e5a-9b8c-1d2e3f4a5b6c"
NS = "gpu-users"


def fake_nvml(machine: Path) -> Any:
    """The stand-in module, loaded under its own name so that this process's real pynvml stays as it is."""
    spec = importlib.util.spec_from_file_location("fake_pynvml", FAKE_NVML / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class HostCluster:
    def __init__(self, embedded: EmbeddedCluster, metrics_port: int) -> None:
        self.kubectl = [str(build.binary("kubectl")), f"--kubeconfig={embedded.plane.admin_kubeconfig}"]
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def run(self, *args: str, input: str | None = None) -> str:
        return subprocess.run([*self.kubectl, *args], input=input, capture_output=True, text=True,
                              check=True).stdout

    def phase(self, name: str) -> str:
        return self.run("get", "pod", "-n", NS, name, "-o", "jsonpath={.status.phase}")

    def wait(self, predicate: Any, what: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    def figures(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return str(r.read().decode())


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostCluster]:
    work = tmp_path_factory.mktemp("hostgpus")
    machine = work / "machine.json"
    machine.write_text(json.dumps([{"name": "Tesla T4", "uuid": T4, "minor": 0, "memory_mib": 15360, "watts": 70}]))
    os.environ["AIFACILITY_FAKE_NVML"] = str(machine)  # read by the stand-in in this process and the agent's
    try:
        base = load_facility(None)
        served = host_node(base, discover(fake_nvml(machine)), cpu="2", memory="4Gi")
        # This machine is the only node that runs pods (the demo's simulated GPU nodes would hide the point).
        doc = base.model_dump(mode="json")
        doc["nodes"] = [n for n in doc["nodes"] if n.get("interlink")]
        facility = with_host_node(Facility.model_validate(doc), served)
        facility_file = work / "facility.json"
        facility_file.write_text(facility.model_dump_json())
        build.build(quiet=True)
        embedded = EmbeddedCluster(facility, work / "state")
        port = free_port()
        sup = Supervisor()
        try:
            for component in embedded.components(facility_file, nodes=False):
                sup.start(component, timeout=120)
            agent = embedded.node_agent(facility_file, env={"PYTHONPATH": str(FAKE_NVML)}, gpu_metrics_port=port)
            sup.start(agent, timeout=120)
            cluster = HostCluster(embedded, port)
            cluster.run("create", "namespace", NS)
            yield cluster
        finally:
            sup.stop()
    finally:
        os.environ.pop("AIFACILITY_FAKE_NVML", None)


def pod(name: str, gpus: int, command: str) -> str:
    limits = {"cpu": "100m", "memory": "256Mi", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"kubernetes.io/hostname": "host"},
                 "securityContext": {"runAsUser": 1000, "runAsGroup": 100},
                 "containers": [{"name": "main", "image": "python", "command": [sys.executable, "-c", command],
                                 "resources": {"limits": limits, "requests": limits}}]}})


SHOW = ("import os, time; print('NVIDIA=' + os.environ.get('NVIDIA_VISIBLE_DEVICES', '-'), "
        "'CUDA=' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'), flush=True); time.sleep({sleep})")


def test_the_machine_s_gpu_goes_to_the_pod_that_asks_and_its_figures_name_that_pod(host: HostCluster) -> None:
    node = json.loads(host.run("get", "node", "host", "-o", "json"))
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "Tesla-T4"
    host.run("apply", "-f", "-", input=pod("with-gpu", 1, SHOW.format(sleep=600)))
    host.run("apply", "-f", "-", input=pod("without-gpu", 0, SHOW.format(sleep=0)))
    host.wait(lambda: host.phase("with-gpu") == "Running", "the GPU pod to run")
    host.wait(lambda: host.phase("without-gpu") == "Succeeded", "the other pod to finish")
    logs = host.wait(lambda: host.run("logs", "-n", NS, "with-gpu"), "the GPU pod's output")
    assert logs.split() == [f"NVIDIA={T4}", f"CUDA={T4}"]
    assert host.run("logs", "-n", NS, "without-gpu").split() == ["NVIDIA=void", "CUDA="]

    # The figures: the T4 is with-gpu's, so its energy counter is credited to that pod; 70 W keeps it rising.
    first = host.wait(lambda: parse(host.figures()), "the GPU's energy credited to the pod")
    assert [(s.namespace, s.pod, s.device) for s in first] == [(NS, "with-gpu", T4)]
    text = host.figures()
    assert 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="' + T4 + '"' in text and 'modelName="Tesla T4"' in text
    time.sleep(1.5)
    assert parse(host.figures())[0].millijoules > first[0].millijoules

    # A pod cannot read the figures (they name every tenant's pods): the port is the cluster's own.
    probe = ("import urllib.request\ntry:\n    urllib.request.urlopen('" + host.metrics_url + "', timeout=3)\n"
             "    print('REACHED')\nexcept Exception as e:\n    print('REFUSED', type(e).__name__)")
    host.run("apply", "-f", "-", input=pod("snooper", 0, probe))
    host.wait(lambda: host.phase("snooper") in ("Succeeded", "Failed"), "the snooping pod to finish")
    assert host.run("logs", "-n", NS, "snooper").startswith("REFUSED")

    # Once the pod is gone the GPU is nobody's: no pod label, and the next pod may have it.
    host.run("delete", "pod", "-n", NS, "with-gpu", "--wait=true", "--timeout=60s")
    host.wait(lambda: 'pod="with-gpu"' not in host.figures(), "the GPU to be released")
    assert parse(host.figures()) == []
