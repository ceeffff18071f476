"""The simulated device plugins: a container sees exactly the devices it was allocated, as on a real node."""

from __future__ import annotations

from aifacility.embedded.nodeagent.devices import DeviceManager


def container(name: str, **limits: str) -> dict:
    return {"name": name, "resources": {"limits": limits}}


def test_mig_slices_are_handed_out_once_and_kept_across_restarts() -> None:
    dm = DeviceManager("gpu-a100-01", {"cpu": "64", "nvidia.com/mig-1g.10gb": "2", "nvidia.com/mig-3g.40gb": "1"})
    a = dm.allocate("pod-a", container("nb", **{"nvidia.com/mig-1g.10gb": "1"}))["NVIDIA_VISIBLE_DEVICES"]
    b = dm.allocate("pod-b", container("nb", **{"nvidia.com/mig-1g.10gb": "1"}))["NVIDIA_VISIBLE_DEVICES"]
    assert a.startswith("MIG-") and b.startswith("MIG-") and a != b
    # the same container restarting gets the same slice back
    assert dm.allocate("pod-a", container("nb", **{"nvidia.com/mig-1g.10gb": "1"}))["NVIDIA_VISIBLE_DEVICES"] == a
    dm.release("pod-a")
    c = dm.allocate("pod-c", container("nb", **{"nvidia.com/mig-1g.10gb": "1"}))["NVIDIA_VISIBLE_DEVICES"]
    assert c == a  # freed by pod-a's end


def test_whole_gpus_and_no_gpu() -> None:
    dm = DeviceManager("gpu-t4-01", {"nvidia.com/gpu": "4"})
    two = dm.allocate("p", container("c", **{"nvidia.com/gpu": "2"}))["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert len(two) == 2 and all(d.startswith("GPU-") for d in two)
    assert dm.allocate("q", container("c", cpu="1"))["NVIDIA_VISIBLE_DEVICES"] == "void"
    # stable identities: the same node always has the same devices
    assert DeviceManager("gpu-t4-01", {"nvidia.com/gpu": "4"}).devices == dm.devices
