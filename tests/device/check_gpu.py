"""The check for a machine with a real NVIDIA GPU (issue 16), run by tests/device/check-gpu.sh; no network needed.

It discovers the GPUs (what `aifacility check --host-gpus` says), starts the embedded cluster (control plane,
Kueue, node agent) with this machine as a node of the demo facility, runs a pod with one GPU whose process does a
small CUDA computation (PyTorch or CuPy where installed, else the CUDA driver API through libcuda) and prints the
device it saw, and a second pod without a GPU, which must see none. Exit 0 only when both hold. While the GPU pod
runs it prints the node agent's GPU figures (DCGM exporter names, what the accounting collector reads), with the
pod that holds the GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gpucheck import PROBE, facility_with_this_machine, verdict  # beside this file

from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane import build
from aifacility.embedded.nodeagent.hostgpus import DiscoveryError
from aifacility.launcher.supervisor import Supervisor, free_port

NS = "gpu-check"


def pod(name: str, resource: str | None) -> dict[str, object]:
    limits = {"cpu": "1", "memory": "2Gi", **({resource: "1"} if resource else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"kubernetes.io/hostname": "host"},
                     # as a notebook runs: jovyan, not root (the GPU's device files must serve such a user)
                     "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True},
                     "containers": [{"name": "probe", "image": "python", "command": [sys.executable, "-c", PROBE],
                                     "resources": {"limits": limits, "requests": limits}}]}}


def gpu_figures(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return str(r.read().decode())
    except OSError as e:
        return f"(not readable: {e})"


def main() -> int:
    try:
        facility, _, _, resource = facility_with_this_machine()
    except DiscoveryError as e:
        print(f"check-gpu: {e}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="aifacility-gpu-check-"))
    facility_file = work / "facility.json"
    facility_file.write_text(facility.model_dump_json())
    build.build(quiet=True)
    cluster = EmbeddedCluster(facility, work / "state")
    sup = Supervisor()
    metrics_port = free_port()
    kubectl = [str(build.binary("kubectl")), f"--kubeconfig={cluster.plane.admin_kubeconfig}"]
    try:
        for component in cluster.components(facility_file, gpu_metrics_port=metrics_port):
            sup.start(component, timeout=180)
        subprocess.run([*kubectl, "create", "namespace", NS], check=True, capture_output=True)
        for name, res in (("with-gpu", resource), ("without-gpu", None)):
            subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(pod(name, res)), text=True, check=True,
                           capture_output=True)
        out = {}
        figures = ""
        for name in ("with-gpu", "without-gpu"):
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                phase = subprocess.run([*kubectl, "get", "pod", "-n", NS, name, "-o", "jsonpath={.status.phase}"],
                                       capture_output=True, text=True).stdout
                if phase in ("Succeeded", "Failed"):
                    break
                if name == "with-gpu" and phase == "Running" and 'pod="with-gpu"' not in figures:
                    figures = gpu_figures(metrics_port)
                time.sleep(1)
            out[name] = subprocess.run([*kubectl, "logs", "-n", NS, name], capture_output=True, text=True).stdout
            print(f"--- pod {name} ({phase}):\n{out[name]}", flush=True)
        print(f"--- the node agent's GPU figures while with-gpu ran:\n{figures}", flush=True)
        print("check-gpu: GPU energy credited to pod with-gpu: "
              + ("yes" if 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{' in figures and 'pod="with-gpu"' in figures
                 else "no (NVML gave no energy counter, or the GPU is in MIG mode)"), flush=True)
        ok = verdict(out["with-gpu"], out["without-gpu"])
        print("check-gpu: " + ("OK: the GPU pod saw its device, the other none" if ok else "FAILED"), flush=True)
        return 0 if ok else 1
    finally:
        sup.stop()


if __name__ == "__main__":
    sys.exit(main())
