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

from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane import build
from aifacility.embedded.nodeagent.hostgpus import (
    PRODUCT_LABEL,
    DiscoveryError,
    discover,
    explain,
    host_node,
    with_host_node,
)
from aifacility.facility import load_facility
from aifacility.facility.model import Accelerator, Facility
from aifacility.launcher.supervisor import Supervisor, free_port

NS = "gpu-check"
# What the pods run: a small CUDA computation on the GPU it was given, through PyTorch or CuPy where the machine has
# them, else through the CUDA driver API itself (libcuda, which every NVIDIA driver installs: fill device memory
# on the GPU and read it back); and what the pod was given. "device: <name>" only where a computation ran.
PROBE = r"""
import ctypes, glob, os, time
print("NVIDIA_VISIBLE_DEVICES=" + os.environ.get("NVIDIA_VISIBLE_DEVICES", ""))
print("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", ""))
print("device files: " + " ".join(sorted(glob.glob("/dev/nvidia*"))))

def with_torch():
    import torch
    n = torch.cuda.device_count()
    print(f"torch sees {n} GPU(s)")
    if n:
        x = torch.rand(1024, 1024, device="cuda")
        print("device:", torch.cuda.get_device_name(0), "| sum of x@x:", float((x @ x).sum()))

def with_cupy():
    import cupy
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as e:
        n = 0
        print(f"cupy: {e}")
    print(f"cupy sees {n} GPU(s)")
    if n:
        x = cupy.random.rand(1024, 1024)
        print("device:", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "| sum:", float((x @ x).sum()))

def with_driver_api():
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        print(f"no CUDA driver library: {e}")
        return
    r = cuda.cuInit(0)
    n = ctypes.c_int(0)
    if r == 0:
        r = cuda.cuDeviceGetCount(ctypes.byref(n))
    print(f"the CUDA driver sees {n.value} GPU(s)" + (f" (CUresult {r})" if r else ""))
    if not n.value:
        return
    dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    name = ctypes.create_string_buffer(256)
    words = 1 << 20
    out = (ctypes.c_uint32 * words)()
    for call, args in (("cuDeviceGet", (ctypes.byref(dev), 0)), ("cuDeviceGetName", (name, 256, dev)),
                       ("cuDevicePrimaryCtxRetain", (ctypes.byref(ctx), dev)), ("cuCtxSetCurrent", (ctx,)),
                       ("cuMemAlloc_v2", (ctypes.byref(ptr), ctypes.c_size_t(4 * words))),
                       ("cuMemsetD32_v2", (ptr, ctypes.c_uint(42), ctypes.c_size_t(words))),
                       ("cuCtxSynchronize", ()), ("cuMemcpyDtoH_v2", (out, ptr, ctypes.c_size_t(4 * words)))):
        r = getattr(cuda, call)(*args)
        if r:
            print(f"{call} failed: CUresult {r}")
            return
    print("device:", name.value.decode(), "| 4 MiB filled on the GPU and read back:",
          "correct" if all(v == 42 for v in out) else "WRONG")

for probe in (with_torch, with_cupy, with_driver_api):
    try:
        probe()
        break
    except ImportError:
        continue
time.sleep(8)  # holds its GPU a while: the check reads the node agent's GPU figures meanwhile
"""


def facility_with_this_machine() -> tuple[Facility, str]:
    """The demo facility, an accelerator for this machine's GPU model when the demo has none, and this machine."""
    base = load_facility(None)
    gpus = discover()
    doc = base.model_dump(mode="json")
    known = {a.node_selector.get(PRODUCT_LABEL) for a in base.accelerators}
    for g in gpus:
        if not g.mig_enabled and g.product not in known:
            doc["accelerators"].append(Accelerator(
                name=f"host-{len(doc['accelerators'])}", kind="gpu", display_name=g.model, resource="nvidia.com/gpu",
                node_selector={PRODUCT_LABEL: g.product}).model_dump(mode="json"))
            known.add(g.product)
    facility = Facility.model_validate(doc)
    served = host_node(facility, gpus, cpu="4", memory="16Gi")
    print("\n".join(explain(facility, gpus, served)), flush=True)
    if not served.devices:
        raise SystemExit("check-gpu: no GPU of this machine can be served (see above)")
    resource = next(iter(served.devices))
    return with_host_node(facility, served), resource


def pod(name: str, resource: str | None) -> dict[str, object]:
    limits = {"cpu": "1", "memory": "2Gi", **({resource: "1"} if resource else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"kubernetes.io/hostname": "host"},
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
        facility, resource = facility_with_this_machine()
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
        with_gpu, without = out["with-gpu"], out["without-gpu"]
        ok = ("CUDA_VISIBLE_DEVICES=\n" not in with_gpu and "/dev/nvidia" in with_gpu and "\ndevice: " in with_gpu
              and "WRONG" not in with_gpu
              and "CUDA_VISIBLE_DEVICES=\n" in without and "device files: \n" in without
              and "\ndevice: " not in without)
        print("check-gpu: " + ("OK: the GPU pod saw its device, the other none" if ok else "FAILED"), flush=True)
        return 0 if ok else 1
    finally:
        sup.stop()


if __name__ == "__main__":
    sys.exit(main())
