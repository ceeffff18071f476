"""The machine's own NVIDIA GPUs, for an embedded facility on a GPU server (`aifacility up --host-gpus`,
`aifacility check --host-gpus`).

`discover` reads them through NVML (nvidia-ml-py, the library the NVIDIA device plugin and DCGM use), or parses
`nvidia-smi` where the Python binding is missing: model, memory, UUID, MIG mode and the MIG instances that exist.
It only reads: it never changes a GPU's settings (MIG layouts are the administrator's, as with the GPU operator's
MIG manager).

`host_node` turns what was found into what a device plugin would advertise for the facility file: a node whose
accelerators are the facility's accelerators matched by the GPU operator's product label (and MIG profile), with
the GPU operator's node labels, and the devices behind each resource (UUIDs and the device files a container
needs). Optional time-slicing advertises each whole GPU `replicas` times, as the device plugin's sharing option
does; the devices then carry the same UUID.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifacility.facility.model import Accelerator, Facility, Node

CONTROL_FILES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class MigInstance:
    uuid: str
    profile: str  # as the GPU operator names the resource: "1g.10gb"
    gpu_instance: int | None = None
    compute_instance: int | None = None


@dataclass(frozen=True)
class HostGPU:
    index: int
    uuid: str
    model: str  # NVML's name: "NVIDIA A100-SXM4-80GB", "Tesla T4"
    memory_mib: int
    minor: int  # /dev/nvidia<minor>
    mig_enabled: bool = False
    migs: tuple[MigInstance, ...] = ()

    @property
    def product(self) -> str:
        """The GPU operator's `nvidia.com/gpu.product` label value: the name with spaces as dashes."""
        return "-".join(self.model.split())


@dataclass(frozen=True)
class HostDevice:
    """One allocatable unit: what NVIDIA_VISIBLE_DEVICES names and the device files a container needs."""

    id: str  # unique per unit (a time-sliced GPU's replicas differ here, not in `uuid`)
    uuid: str
    files: tuple[str, ...]


@dataclass
class HostGPUs:
    node: Node
    devices: dict[str, list[HostDevice]] = field(default_factory=dict)  # extended resource -> units
    notes: list[str] = field(default_factory=list)  # what was found and not served, and why


class DiscoveryError(RuntimeError):
    """No GPUs could be read; the message says why (no driver, no NVML)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def mig_profile(slices: int, memory_mib: int, gpu_memory_mib: int, *, compute_slices: int | None = None,
                media: bool = False) -> str:
    """NVIDIA's name for a MIG device's profile, formed as go-nvlib (the device plugin's and GPU feature discovery's
    library) forms it: `<g>g.<gb>gb`; `<c>c.<g>g.<gb>gb` where the compute instance has fewer slices than its GPU
    instance; `+me` for a GPU instance with the media extensions. The memory is not simply rounded up: it is the
    device's share of its GPU in eighths, rounded up, times the GPU's whole GiB, so the 79 GiB of an A100 80GB's
    7-slice device is 7g.80gb."""
    eighths = math.ceil(memory_mib / gpu_memory_mib * 8) / 8
    gb = math.floor(eighths * math.ceil(gpu_memory_mib / 1024) + 0.5)  # Go's math.Round: halves away from 0
    name = f"{slices}g.{gb}gb"
    if compute_slices is not None and compute_slices != slices:
        name = f"{compute_slices}c.{name}"
    return name + ("+me" if media else "")


def mig_resource(profile: str) -> str:
    """The extended resource the device plugin advertises a profile as (mixed strategy): a resource name has no
    `+`, so `1g.10gb+me` is `nvidia.com/mig-1g.10gb.me`."""
    return f"nvidia.com/mig-{profile.replace('+', '.')}"


# GPU-instance profiles with the media extensions (NVDEC, NVJPG, OFA of the whole GPU on one slice): `+me`.
_MEDIA_PROFILES = ("NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1", "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1")


def _media_extensions(nvml: Any, gpu: Any, gpu_instance: int) -> bool:
    """Whether a GPU instance is of a `+me` profile. NVML's GPU-instance queries may be kept for root by the
    driver: where they are refused the instance is named without `+me` (served under the plain profile)."""
    try:
        profile_id = nvml.nvmlGpuInstanceGetInfo(nvml.nvmlDeviceGetGpuInstanceById(gpu, gpu_instance)).profileId
    except nvml.NVMLError:
        return False
    for constant in _MEDIA_PROFILES:
        try:
            if nvml.nvmlDeviceGetGpuInstanceProfileInfo(gpu, getattr(nvml, constant)).id == profile_id:
                return True
        except (nvml.NVMLError, AttributeError):  # not on this GPU, or an nvidia-ml-py without the constant
            continue
    return False


def discover(nvml: Any = None, run: Callable[[list[str]], str] | None = None) -> list[HostGPU]:
    """The GPUs of this machine: through `nvml` (the `pynvml` module of nvidia-ml-py, or a stand-in with its
    API), else through nvidia-smi (`run` runs it); DiscoveryError when neither answers."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[no-redef]
        except ImportError:
            nvml = None
    if nvml is not None:
        try:
            return _from_nvml(nvml)
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded...: try nvidia-smi
            reason = f"NVML: {e}"
    else:
        reason = "NVML: nvidia-ml-py is not installed"
    if run is None and shutil.which("nvidia-smi") is None:
        raise DiscoveryError(f"no NVIDIA GPUs can be read here ({reason}; no nvidia-smi)")
    try:
        return _from_nvidia_smi(run or _run)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise DiscoveryError(f"no NVIDIA GPUs can be read here ({reason}; nvidia-smi: {e})") from None


def _from_nvml(nvml: Any) -> list[HostGPU]:
    nvml.nvmlInit()
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            memory_mib = int(nvml.nvmlDeviceGetMemoryInfo(h).total) // 2**20
            try:
                mig_enabled = bool(nvml.nvmlDeviceGetMigMode(h)[0])
            except nvml.NVMLError:  # not a MIG-capable GPU
                mig_enabled = False
            migs = []
            if mig_enabled:
                for j in range(nvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        m = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except nvml.NVMLError:  # no instance in this slot
                        continue
                    attrs = nvml.nvmlDeviceGetAttributes(m)
                    gi = nvml.nvmlDeviceGetGpuInstanceId(m)
                    profile = mig_profile(attrs.gpuInstanceSliceCount, attrs.memorySizeMB, memory_mib,
                                          compute_slices=attrs.computeInstanceSliceCount,
                                          media=_media_extensions(nvml, h, gi))
                    migs.append(MigInstance(uuid=_text(nvml.nvmlDeviceGetUUID(m)), profile=profile, gpu_instance=gi,
                                            compute_instance=nvml.nvmlDeviceGetComputeInstanceId(m)))
            gpus.append(HostGPU(index=i, uuid=_text(nvml.nvmlDeviceGetUUID(h)), model=_text(nvml.nvmlDeviceGetName(h)),
                                memory_mib=memory_mib,
                                minor=int(nvml.nvmlDeviceGetMinorNumber(h)), mig_enabled=mig_enabled,
                                migs=tuple(migs)))
        return gpus
    finally:
        nvml.nvmlShutdown()


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def _from_nvidia_smi(run: Callable[[list[str]], str]) -> list[HostGPU]:
    """`--query-gpu` for the GPUs; `-L` for the MIG instances under each (profile and UUID)."""
    rows = run(["nvidia-smi", "--query-gpu=index,uuid,name,memory.total,pci.bus_id,mig.mode.current",
                "--format=csv,noheader,nounits"])
    listing = run(["nvidia-smi", "-L"]).splitlines()
    migs: dict[str, list[MigInstance]] = {}
    current = ""
    for line in listing:
        line = line.strip()
        if line.startswith("GPU ") and "(UUID: " in line:
            current = line.rsplit("(UUID: ", 1)[1].rstrip(")")
        elif line.startswith("MIG ") and "(UUID: " in line:
            profile = line.split()[1]
            migs.setdefault(current, []).append(MigInstance(uuid=line.rsplit("(UUID: ", 1)[1].rstrip(")"),
                                                            profile=profile))
    gpus = []
    for row in rows.splitlines():
        if not row.strip():
            continue
        index, uuid, name, memory, _bus, mig = (c.strip() for c in row.split(","))
        gpus.append(HostGPU(index=int(index), uuid=uuid, model=name, memory_mib=int(float(memory)),
                            minor=int(index), mig_enabled=mig == "Enabled", migs=tuple(migs.get(uuid, []))))
    return gpus


def ensure_uvm(dev: Path = Path("/dev"), run: Callable[[list[str]], str] | None = None) -> str | None:
    """Make sure CUDA's unified-memory device file exists before a pod needs it. The driver creates
    /dev/nvidia-uvm only when a root process first uses CUDA, and a pod's process is not root: without it CUDA
    fails to initialise. As the NVIDIA container toolkit does, `nvidia-modprobe -u -c=0` loads the module and
    creates the file. Returns what a person should know when it could not be done, else None."""
    if (dev / "nvidia-uvm").exists():
        return None
    if run is None and shutil.which("nvidia-modprobe") is None:
        return f"{dev}/nvidia-uvm is missing and there is no nvidia-modprobe: CUDA in a pod may fail to initialise"
    try:
        (run or _run)(["nvidia-modprobe", "-u", "-c=0"])
    except (OSError, subprocess.SubprocessError) as e:
        return f"nvidia-modprobe -u -c=0 failed ({e}): CUDA in a pod may fail to initialise"
    return None if (dev / "nvidia-uvm").exists() else f"{dev}/nvidia-uvm is still missing after nvidia-modprobe"


def _mig_caps(gpu: HostGPU, mig: MigInstance, proc: Path) -> tuple[str, ...]:
    """The MIG capability device files of one instance (/dev/nvidia-caps/nvidia-capN), from the driver's
    /proc entries; none when the driver does not say."""
    if mig.gpu_instance is None or mig.compute_instance is None:
        return ()
    base = proc / f"driver/nvidia/capabilities/gpu{gpu.minor}/mig/gi{mig.gpu_instance}"
    files = []
    for access in (base / "access", base / f"ci{mig.compute_instance}" / "access"):
        try:
            text = access.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("DeviceFileMinor:"):
                files.append(f"/dev/nvidia-caps/nvidia-cap{int(line.split(':', 1)[1])}")
    return tuple(files)


def _match(facility: Facility, kind: str, product: str, resource: str | None = None) -> Accelerator | None:
    for a in facility.accelerators:
        if a.kind != kind or a.node_selector.get(PRODUCT_LABEL) != product:
            continue
        if resource is None or a.resource == resource:
            return a
    return None


def host_node(facility: Facility, gpus: list[HostGPU], *, name: str = "host", cpu: str = "8",
              memory: str = "32Gi", replicas: int = 1, proc: Path = Path("/proc")) -> HostGPUs:
    """The node this machine is, with the accelerators of the facility file that its GPUs are."""
    if replicas < 1:
        raise ValueError(f"time-slicing replicas must be 1 or more, not {replicas}")
    counts: dict[str, int] = {}
    devices: dict[str, list[HostDevice]] = {}
    notes: list[str] = []
    # A node carries one product label (as the GPU operator's feature discovery labels it), and the profiles'
    # node selectors ask for it: the node is the first GPU model the facility file names, other models are not
    # served (their profiles could never be scheduled here).
    named = {a.node_selector.get(PRODUCT_LABEL) for a in facility.accelerators}
    product = next((g.product for g in gpus if g.product in named), gpus[0].product if gpus else None)
    for gpu in gpus:
        if gpu.product != product:
            notes.append(f"GPU {gpu.index} ({gpu.model}, {gpu.uuid}): the node is labelled {PRODUCT_LABEL}={product} "
                         "(one model per node, as the GPU operator labels nodes); its profiles could not be "
                         "scheduled here")
            continue
        base = (f"/dev/nvidia{gpu.minor}", *CONTROL_FILES)
        if gpu.mig_enabled:
            for mig in gpu.migs:
                resource = mig_resource(mig.profile)
                acc = _match(facility, "mig", gpu.product, resource)
                if acc is None:
                    notes.append(f"GPU {gpu.index} ({gpu.model}) MIG {mig.profile} {mig.uuid}: no accelerator of the "
                                 f"facility file is kind mig, resource {resource}, {PRODUCT_LABEL}={gpu.product}")
                    continue
                counts[acc.name] = counts.get(acc.name, 0) + 1
                devices.setdefault(acc.resource, []).append(
                    HostDevice(mig.uuid, mig.uuid, base + _mig_caps(gpu, mig, proc)))
            if not gpu.migs:
                notes.append(f"GPU {gpu.index} ({gpu.model}) is in MIG mode without instances: nothing to serve")
            continue
        acc = _match(facility, "gpu", gpu.product)
        if acc is None:
            notes.append(f"GPU {gpu.index} ({gpu.model}, {gpu.uuid}): no accelerator of the facility file is kind gpu "
                         f"with {PRODUCT_LABEL}={gpu.product}")
            continue
        counts[acc.name] = counts.get(acc.name, 0) + replicas
        devices.setdefault(acc.resource, []).extend(
            HostDevice(gpu.uuid if replicas == 1 else f"{gpu.uuid}::{r}", gpu.uuid, base) for r in range(replicas))
    mine = [g for g in gpus if g.product == product]
    labels = {"nvidia.com/gpu.count": str(len(mine)),
              "nvidia.com/mig.strategy": "mixed" if any(g.mig_enabled for g in mine) else "none"}
    if product:
        labels[PRODUCT_LABEL] = product
    if replicas > 1:
        labels["nvidia.com/gpu.replicas"] = str(replicas)
        labels["nvidia.com/gpu.sharing-strategy"] = "time-slicing"
    node = Node(name=name, cpu=cpu, memory=memory, labels=labels, accelerators=counts)
    return HostGPUs(node=node, devices=devices, notes=notes)


# On the node that is this machine: how many time-slicing replicas each whole GPU was advertised with. The node
# agent discovers the GPUs again (same machine, same answer) to give containers the real devices.
HOST_GPUS_LABEL = "aifacility.io/host-gpus"


def with_host_node(facility: Facility, served: HostGPUs, replicas: int = 1) -> Facility:
    """The facility with this machine's node added (validated again: its accelerators must be the file's)."""
    node = served.node.model_copy(update={"labels": {**served.node.labels, HOST_GPUS_LABEL: str(replicas)}})
    if any(n.name == node.name for n in facility.nodes):
        raise ValueError(f"the facility file already has a node named '{node.name}'")
    doc = facility.model_dump(mode="json")
    doc["nodes"].append(node.model_dump(mode="json"))
    return Facility.model_validate(doc)


def explain(facility: Facility, gpus: list[HostGPU], served: HostGPUs) -> list[str]:
    """What `aifacility check --host-gpus` says: each GPU and MIG instance found, what it is served as, and the
    profiles this machine can give sessions."""
    lines = [f"{len(gpus)} NVIDIA GPU(s) found (read only; MIG layouts are left as they are):"]
    for g in gpus:
        mode = f"MIG on, {len(g.migs)} instance(s)" if g.mig_enabled else "MIG off"
        lines.append(f"  GPU {g.index}: {g.model} ({g.memory_mib} MiB, {g.uuid}), {mode}")
        for m in g.migs:
            lines.append(f"    MIG {m.profile}: {m.uuid}")
    by_name = {a.name: a for a in facility.accelerators}
    for name, count in sorted(served.node.accelerators.items()):
        a = by_name[name]
        lines.append(f"  serves {count} x {a.display_name} as {a.resource} (accelerator '{name}')")
    lines += [f"  not served: {note}" for note in served.notes]
    profiles = [p.name for p in facility.profiles if p.accelerator and p.accelerator.name in served.node.accelerators]
    lines.append("  profiles it can serve: " + (", ".join(profiles) or "none (no profile asks for these)"))
    return lines
