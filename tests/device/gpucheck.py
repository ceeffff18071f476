"""What both GPU checks share (check_gpu.py: the whole embedded cluster; check_gpu_node.py: the node agent's part
alone, for a machine that has only Python and the driver): the facility with this machine as its node, the
program the pods run, and the verdict on what the two pods printed."""

from __future__ import annotations

from aifacility.embedded.nodeagent.hostgpus import (
    PRODUCT_LABEL,
    HostGPU,
    HostGPUs,
    discover,
    explain,
    host_node,
    mig_resource,
    with_host_node,
)
from aifacility.facility import load_facility
from aifacility.facility.model import Accelerator, Facility

# What the pods run: a small CUDA computation on the GPU it was given, through PyTorch or CuPy where the machine has
# them, else through the CUDA driver API itself (libcuda, which every NVIDIA driver installs: fill device memory
# on the GPU and read it back); and what the pod was given. "device: <name>" only where a computation ran.
PROBE = r"""
import ctypes, glob, os, time
print("NVIDIA_VISIBLE_DEVICES=" + os.environ.get("NVIDIA_VISIBLE_DEVICES", ""))
print("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", ""))
print("device files: " + " ".join(sorted(glob.glob("/dev/nvidia*"))))
print(f"uid: {os.getuid()}")

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


def facility_with_this_machine() -> tuple[Facility, HostGPUs, list[HostGPU], str]:
    """The demo facility with an accelerator for each GPU model and MIG profile of this machine that it does not
    name, and this machine as its node; what the node serves, the GPUs found, and the resource a pod asks for."""
    base = load_facility(None)
    gpus = discover()
    doc = base.model_dump(mode="json")
    named = {(a.node_selector.get(PRODUCT_LABEL), a.resource) for a in base.accelerators}

    def add(kind: str, display_name: str, resource: str, product: str) -> None:
        if (product, resource) not in named:
            doc["accelerators"].append(Accelerator(
                name=f"host-{len(doc['accelerators'])}", kind=kind, display_name=display_name, resource=resource,
                node_selector={PRODUCT_LABEL: product}).model_dump(mode="json"))
            named.add((product, resource))

    for g in gpus:
        if g.mig_enabled:
            for m in g.migs:
                add("mig", f"{g.model} MIG {m.profile}", mig_resource(m.profile), g.product)
        else:
            add("gpu", g.model, "nvidia.com/gpu", g.product)
    facility = Facility.model_validate(doc)
    served = host_node(facility, gpus, cpu="4", memory="16Gi")
    print("\n".join(explain(facility, gpus, served)), flush=True)
    if not served.devices:
        raise SystemExit("check-gpu: no GPU of this machine can be served (see above)")
    resource = next(iter(served.devices))
    return with_host_node(facility, served), served, gpus, resource


def verdict(with_gpu: str, without: str) -> bool:
    """The GPU pod was given a device, saw its device file and ran a computation on it that came out right; the
    other pod was given nothing and saw no device file."""
    return ("CUDA_VISIBLE_DEVICES=\n" not in with_gpu and "/dev/nvidia" in with_gpu and "\ndevice: " in with_gpu
            and "WRONG" not in with_gpu
            and "CUDA_VISIBLE_DEVICES=\n" in without and "device files: \n" in without
            and "\ndevice: " not in without)
