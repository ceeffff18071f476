"""A GPU server's own GPUs (issue 16's discovery and allocation), with a fake NVML: what is found, what the node
advertises for the demo facility's accelerators, and what a container is given (UUIDs, device files)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from aifacility.embedded.nodeagent.devices import DeviceManager
from aifacility.embedded.nodeagent.hostgpus import (
    HOST_GPUS_LABEL,
    DiscoveryError,
    HostGPU,
    MigInstance,
    discover,
    ensure_uvm,
    explain,
    host_node,
    mig_profile,
    mig_resource,
    with_host_node,
)
from aifacility.embedded.nodeagent.sandbox import bwrap_command
from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.facility.model import Facility
from aifacility.launcher import up

FAC = load_facility()
T4 = "GPU-11111111-2222-3333-4444-555555555555"
A100 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@dataclass
class FakeDevice:
    name: bytes
    uuid: str
    minor: int
    memory: int
    mig: int | None = None  # None: not MIG-capable
    instances: tuple[tuple[str, int, int, int, int], ...] = ()  # (uuid, slices, MiB, gi, ci)
    media: tuple[int, ...] = ()  # the GPU instances (ids) of a `+me` profile
    root_only: bool = False  # the driver refuses GPU-instance queries (NVML_ERROR_NO_PERMISSION)


class FakeNVML:
    """The part of pynvml's API that discovery uses, over a fixed machine; it counts init and shutdown."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[FakeDevice]) -> None:
        self.devices = devices
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        return self.devices[i]

    def nvmlDeviceGetName(self, h: Any) -> bytes:
        return h.name  # type: ignore[no-any-return]

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return h.uuid if isinstance(h, FakeDevice) else h[0]  # type: ignore[no-any-return]

    def nvmlDeviceGetMinorNumber(self, h: Any) -> int:
        return h.minor  # type: ignore[no-any-return]

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        return SimpleNamespace(total=h.memory * 1024 * 1024)

    def nvmlDeviceGetMigMode(self, h: Any) -> tuple[int, int]:
        if h.mig is None:
            raise self.NVMLError("Not Supported")
        return (h.mig, h.mig)

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, j: int) -> Any:
        if j >= len(h.instances):
            raise self.NVMLError("Not Found")
        return h.instances[j]

    def nvmlDeviceGetAttributes(self, m: Any) -> Any:
        return SimpleNamespace(gpuInstanceSliceCount=m[1], computeInstanceSliceCount=m[1], memorySizeMB=m[2])

    # GPU-instance profiles: index 7 (1_SLICE_REV1) is the `+me` one, with id 100 here; others have id 200+index.
    NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 = 7
    NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1 = 8

    def nvmlDeviceGetGpuInstanceById(self, h: Any, gi: int) -> Any:
        if h.root_only:
            raise self.NVMLError("Insufficient Permissions")
        return (h, gi)

    def nvmlGpuInstanceGetInfo(self, instance: Any) -> Any:
        h, gi = instance
        return SimpleNamespace(profileId=100 if gi in h.media else 200)

    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: Any, index: int) -> Any:
        if index == 8:
            raise self.NVMLError("Not Supported")  # an A100 has no 2-slice media profile
        return SimpleNamespace(id=100 if index == 7 else 200 + index)

    def nvmlDeviceGetGpuInstanceId(self, m: Any) -> int:
        return m[3]  # type: ignore[no-any-return]

    def nvmlDeviceGetComputeInstanceId(self, m: Any) -> int:
        return m[4]  # type: ignore[no-any-return]


def machine() -> FakeNVML:
    return FakeNVML([
        FakeDevice(b"Tesla T4", T4, 0, 15360),
        FakeDevice(b"NVIDIA A100-SXM4-80GB", A100, 1, 81920, mig=1, instances=(
            ("MIG-1", 1, 9728, 9, 0), ("MIG-2", 1, 9728, 10, 0), ("MIG-3", 3, 40192, 2, 0),
            ("MIG-4", 1, 9728, 13, 0)), media=(13,)),
        FakeDevice(b"NVIDIA H100 80GB HBM3", "GPU-h100", 2, 81559, mig=0),
    ])


def test_nvml_discovery_reads_models_memory_uuids_and_mig_instances() -> None:
    nvml = machine()
    t4, a100, h100 = discover(nvml)
    assert (t4.model, t4.uuid, t4.memory_mib, t4.minor, t4.mig_enabled) == ("Tesla T4", T4, 15360, 0, False)
    assert t4.product == "Tesla-T4" and a100.product == "NVIDIA-A100-SXM4-80GB"
    assert [(m.uuid, m.profile, m.gpu_instance) for m in a100.migs] == [
        ("MIG-1", "1g.10gb", 9), ("MIG-2", "1g.10gb", 10), ("MIG-3", "3g.40gb", 2), ("MIG-4", "1g.10gb+me", 13)]
    assert not h100.mig_enabled and h100.migs == ()
    assert nvml.calls == ["init", "shutdown"]  # only read, and NVML is released


def test_where_the_driver_keeps_gpu_instances_for_root_a_media_instance_is_served_as_its_plain_profile() -> None:
    nvml = machine()
    nvml.devices[1].root_only = True
    _, a100, _ = discover(nvml)
    assert [m.profile for m in a100.migs] == ["1g.10gb", "1g.10gb", "3g.40gb", "1g.10gb"]


@pytest.mark.parametrize(("slices", "mib", "gpu_mib", "name"), [
    # (GPU instance slices, the MIG device's memory, its GPU's memory) as NVML reports them, and NVIDIA's name.
    (1, 4864, 40960, "1g.5gb"),  # A100 40GB
    (3, 20096, 40960, "3g.20gb"),
    (1, 9728, 81920, "1g.10gb"),  # A100 80GB
    (7, 80896, 81920, "7g.80gb"),  # 79 GiB: a plain rounding up would say 7g.79gb
    (1, 5836, 24576, "1g.6gb"),  # A30
    (4, 24064, 24576, "4g.24gb"),
    (1, 9984, 81559, "1g.10gb"),  # H100 80GB HBM3
    (1, 19968, 81559, "1g.20gb"),
    (7, 80896, 81559, "7g.80gb"),
    (3, 71424, 143771, "3g.71gb"),  # H200: 70.5 rounds away from zero, as Go's math.Round does
])
def test_mig_profile_names_as_nvidia_gives_them(slices: int, mib: int, gpu_mib: int, name: str) -> None:
    assert mig_profile(slices, mib, gpu_mib) == name


def test_mig_profile_names_of_compute_instances_and_media_extensions() -> None:
    assert mig_profile(3, 40192, 81920, compute_slices=1) == "1c.3g.40gb"
    assert mig_profile(1, 9728, 81920, media=True) == "1g.10gb+me"
    assert mig_resource("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"  # no `+` in a resource name
    assert mig_resource("3g.40gb") == "nvidia.com/mig-3g.40gb"


def test_the_node_serves_the_facility_s_accelerators_and_says_what_it_cannot(tmp_path: Path) -> None:
    t4, a100, h100 = discover(machine())
    for gi, minor in ((9, 3), (2, 4)):  # the driver's capability files of two instances' GPU instances
        access = tmp_path / f"driver/nvidia/capabilities/gpu1/mig/gi{gi}/access"
        access.parent.mkdir(parents=True)
        access.write_text(f"DeviceFileMinor: {minor}\nDeviceFileMode: 292\n")
    # The H100 comes first but no accelerator names it: the node is the A100's (one product label per node).
    served = host_node(FAC, [h100, a100, t4], proc=tmp_path)
    assert served.node.accelerators == {"mig-1g-10gb": 2, "mig-3g-40gb": 1}
    assert served.node.labels == {"nvidia.com/gpu.count": "1", "nvidia.com/mig.strategy": "mixed",
                                  "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    h100_note, media_note, t4_note = served.notes
    assert "MIG 1g.10gb+me MIG-4" in media_note and "resource nvidia.com/mig-1g.10gb.me" in media_note
    assert "NVIDIA H100 80GB HBM3" in h100_note and "Tesla T4" in t4_note
    assert "labelled nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB" in t4_note and "could not be scheduled" in t4_note
    first, second = served.devices["nvidia.com/mig-1g.10gb"]
    assert first.files[0] == "/dev/nvidia1" and first.files[-1] == "/dev/nvidia-caps/nvidia-cap3"
    assert not any("nvidia-caps" in f for f in second.files)  # the driver said nothing for gi10
    # A machine of T4s: whole GPUs with their device file and the driver's control files.
    served = host_node(FAC, [t4])
    [device] = served.devices["nvidia.com/gpu"]
    assert (device.uuid, device.files[0]) == (T4, "/dev/nvidia0") and "/dev/nvidiactl" in device.files
    assert served.node.labels["nvidia.com/gpu.product"] == "Tesla-T4" and served.notes == []


def test_a_gpu_no_accelerator_names_is_explained() -> None:
    h100 = HostGPU(0, "GPU-h100", "NVIDIA H100 80GB HBM3", 81559, 0)
    served = host_node(FAC, [h100])
    assert served.node.accelerators == {}
    assert "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3" in served.notes[0]


def test_time_slicing_advertises_replicas_of_one_gpu() -> None:
    t4 = HostGPU(0, T4, "Tesla T4", 15360, 0)
    served = host_node(FAC, [t4], replicas=3)
    assert served.node.accelerators == {"t4": 3}
    assert {d.uuid for d in served.devices["nvidia.com/gpu"]} == {T4}
    assert len({d.id for d in served.devices["nvidia.com/gpu"]}) == 3
    assert served.node.labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    with pytest.raises(ValueError, match="replicas must be 1 or more"):
        host_node(FAC, [t4], replicas=0)


def test_a_mig_gpu_without_instances_is_explained() -> None:
    served = host_node(FAC, [HostGPU(0, A100, "NVIDIA A100-SXM4-80GB", 81920, 0, mig_enabled=True)])
    assert served.node.accelerators == {} and "MIG mode without instances" in served.notes[0]


def test_nvidia_smi_is_the_fallback() -> None:
    outputs = {
        "--query-gpu": f"0, {T4}, Tesla T4, 15360, 00000000:3B:00.0, [N/A]\n"
                       f"1, {A100}, NVIDIA A100-SXM4-80GB, 81920, 00000000:AF:00.0, Enabled\n",
        "-L": f"GPU 0: Tesla T4 (UUID: {T4})\nGPU 1: NVIDIA A100-SXM4-80GB (UUID: {A100})\n"
              "  MIG 1g.10gb     Device  0: (UUID: MIG-1)\n  MIG 3g.40gb     Device  1: (UUID: MIG-3)\n",
    }

    def run(argv: list[str]) -> str:
        return outputs["-L" if argv[1] == "-L" else "--query-gpu"]

    class Broken:
        class NVMLError(Exception):
            pass

        def nvmlInit(self) -> None:
            raise RuntimeError("NVML Shared Library Not Found")

    t4, a100 = discover(Broken(), run=run)
    assert (t4.model, t4.mig_enabled, a100.mig_enabled) == ("Tesla T4", False, True)
    assert [(m.uuid, m.profile) for m in a100.migs] == [("MIG-1", "1g.10gb"), ("MIG-3", "3g.40gb")]
    assert host_node(FAC, [a100]).node.accelerators == {"mig-1g-10gb": 1, "mig-3g-40gb": 1}


def test_no_gpus_readable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)

    class NoDriver:
        class NVMLError(Exception):
            pass

        def nvmlInit(self) -> None:
            raise RuntimeError("Driver Not Loaded")

    with pytest.raises(DiscoveryError, match=r"NVML: Driver Not Loaded; no nvidia-smi"):
        discover(NoDriver())


def test_containers_get_their_real_devices_and_only_theirs() -> None:
    # An A100 server: one GPU whole, one in MIG mode (the facility with an accelerator for the whole A100).
    doc = FAC.model_dump(mode="json")
    doc["accelerators"].append({"name": "a100", "kind": "gpu", "display_name": "NVIDIA A100", "resource":
                                "nvidia.com/gpu", "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}})
    gpus = [HostGPU(0, T4, "NVIDIA A100-SXM4-80GB", 81920, 0),
            HostGPU(1, A100, "NVIDIA A100-SXM4-80GB", 81920, 1, True, (MigInstance("MIG-1", "1g.10gb"),))]
    served = host_node(Facility.model_validate(doc), gpus)
    assert served.notes == []
    allocatable = {"cpu": "8", "nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "1"}
    devices = DeviceManager("host", allocatable, served.devices)
    gpu = {"name": "nb", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    mig = {"name": "nb", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}
    cpu = {"name": "nb", "resources": {"limits": {"cpu": "1"}}}
    assert devices.allocate("pod-a", gpu) == {"NVIDIA_VISIBLE_DEVICES": T4, "CUDA_VISIBLE_DEVICES": T4}
    assert devices.allocate("pod-b", mig) == {"NVIDIA_VISIBLE_DEVICES": "MIG-1", "CUDA_VISIBLE_DEVICES": "MIG-1"}
    assert devices.allocate("pod-c", cpu) == {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
    assert devices.files("pod-a", "nb")[0] == "/dev/nvidia0" and "/dev/nvidia1" not in devices.files("pod-a", "nb")
    assert devices.files("pod-b", "nb")[0] == "/dev/nvidia1"
    assert devices.files("pod-c", "nb") == ()
    # a second GPU pod gets nothing while the first holds the only T4; after it ends, the T4 again
    assert devices.allocate("pod-d", gpu)["CUDA_VISIBLE_DEVICES"] == ""
    devices.release("pod-a")
    devices.release("pod-d")
    assert devices.allocate("pod-d", gpu)["CUDA_VISIBLE_DEVICES"] == T4


def test_the_sandbox_binds_only_the_given_device_files(tmp_path: Path) -> None:
    argv = bwrap_command(["true"], pod_tmp=tmp_path, mounts=[], devices=("/dev/nvidia0", "/dev/nvidiactl"))
    at = argv.index("--dev")
    assert argv[at:at + 11] == ["--dev", "/dev", "--dev-bind-try", "/dev/nvidia0", "/dev/nvidia0",
                                "--dev-bind-try", "/dev/nvidiactl", "/dev/nvidiactl", "--ro-bind", "/sys", "/sys"]
    plain = bwrap_command(["true"], pod_tmp=tmp_path, mounts=[])
    assert "--dev-bind-try" not in plain and "/sys" not in plain  # a pod without devices: no host /sys either


def test_the_facility_gets_this_machine_as_a_node_and_check_explains_it() -> None:
    gpus = discover(machine())[1:]  # the A100 (MIG) and the H100
    served = host_node(FAC, gpus, cpu="16", memory="64Gi", replicas=1)
    grown = with_host_node(FAC, served)
    host = grown.nodes[-1]
    assert (host.name, host.cpu, host.accelerators["mig-3g-40gb"]) == ("host", "16", 1)
    assert host.labels[HOST_GPUS_LABEL] == "1" and len(grown.nodes) == len(FAC.nodes) + 1
    with pytest.raises(ValueError, match="already has a node named 'host'"):
        with_host_node(grown, served)
    said = "\n".join(explain(FAC, gpus, served))
    assert "GPU 1: NVIDIA A100-SXM4-80GB (81920 MiB" in said and "MIG 3g.40gb: MIG-3" in said
    assert "serves 2 x A100 MIG 1g.10gb slice as nvidia.com/mig-1g.10gb" in said
    assert "not served: GPU 2 (NVIDIA H100 80GB HBM3" in said
    assert "profiles it can serve: mig-1g-10gb, mig-3g-40gb" in said


def test_without_gpus_check_and_up_say_so(tmp_path: Path) -> None:
    aifacility = str(Path(sys.executable).parent / "aifacility")
    checked = subprocess.run([aifacility, "check", str(demo_facility_path()), "--host-gpus"],
                             capture_output=True, text=True, timeout=120)
    if shutil.which("nvidia-smi"):  # a GPU machine: it reads them (tests/device/check-gpu.sh goes further)
        assert checked.returncode == 0 and "NVIDIA GPU(s) found" in checked.stdout, checked.stderr
        return
    assert checked.returncode == 2 and "no NVIDIA GPUs can be read here" in checked.stderr, checked.stderr
    started = subprocess.run([aifacility, "up", "--host-gpus", "--state-dir", str(tmp_path / "state"), "--port", "1"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2 and "--host-gpus: no NVIDIA GPUs can be read here" in started.stderr, started.stderr
    assert not (tmp_path / "state" / "facility-with-host-gpus.json").exists()
    # The same from the facility file's setting, without the flags.
    doc = yaml.safe_load(demo_facility_path().read_text())
    doc["host_gpus"] = {"enabled": True, "replicas": 2}
    enabled = tmp_path / "facility.yaml"
    enabled.write_text(yaml.safe_dump(doc))
    checked = subprocess.run([aifacility, "check", str(enabled)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 2 and "no NVIDIA GPUs can be read here" in checked.stderr, checked.stderr
    started = subprocess.run([aifacility, "up", "--facility", str(enabled), "--state-dir", str(tmp_path / "state"),
                              "--port", "1"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 2, started.stderr
    assert f"host_gpus.enabled in {enabled}: no NVIDIA GPUs can be read here" in started.stderr, started.stderr


def test_the_facility_file_turns_host_gpus_on_and_the_flag_overrides_its_replicas(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(up, "discover", lambda: discover(machine())[:1])  # this machine: one T4
    doc = FAC.model_dump(mode="json")
    doc["host_gpus"] = {"enabled": True, "replicas": 3}
    facility = Facility.model_validate(doc)
    opts = up.UpOptions(facility=demo_facility_path(), state_dir=tmp_path)
    served_opts, grown = up._with_host_gpus(opts, facility)
    assert served_opts.host_gpus and served_opts.gpu_replicas == 3  # the GPU figures' port goes with it
    assert grown.nodes[-1].accelerators == {"t4": 3} and grown.nodes[-1].labels[HOST_GPUS_LABEL] == "3"
    assert load_facility(served_opts.facility).nodes[-1].name == "host"  # what every part reads
    _, grown = up._with_host_gpus(dataclasses.replace(opts, gpu_replicas=1), facility)
    assert grown.nodes[-1].accelerators == {"t4": 1}
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Facility.model_validate({**doc, "host_gpus": {"enabled": True, "replicas": 0}})


def test_cuda_s_unified_memory_device_is_created_before_a_pod_needs_it(tmp_path: Path) -> None:
    ran: list[list[str]] = []

    def modprobe(argv: list[str]) -> str:  # what nvidia-modprobe does as root: load nvidia-uvm, make its file
        ran.append(argv)
        (tmp_path / "nvidia-uvm").touch()
        return ""

    assert ensure_uvm(tmp_path, modprobe) is None and ran == [["nvidia-modprobe", "-u", "-c=0"]]
    assert ensure_uvm(tmp_path, modprobe) is None and len(ran) == 1  # there already: nothing run

    def fails(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(1, argv)

    problem = ensure_uvm(tmp_path / "other", fails)
    assert problem is not None and "nvidia-modprobe -u -c=0 failed" in problem and "CUDA" in problem
