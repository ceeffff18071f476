"""The device machines' GPU check (tests/device/check-gpu-node.sh) on this machine, with NVML faked: everything
short of the driver. The GPU container is given the GPU's UUID and its device files, and runs as the pod's user;
the other container is given nothing; the GPU figures name the holder; and with no real device file and no CUDA,
the check says FAILED and exits 1 (it never passes without a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_NVML = ROOT / "tests" / "support" / "fakenvml"
T4 = "GPU-77777777-2222-3333-4444-555555555555"


def test_the_node_check_gives_one_container_the_gpu_and_the_other_nothing_and_fails_without_cuda(
        tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps([{"name": "Tesla T4", "uuid": T4, "minor": 0, "memory_mib": 15360, "watts": 70}]))
    env = {**os.environ, "AIFACILITY_FAKE_NVML": str(machine), "PYTHON": sys.executable,
           "PYTHONPATH": str(FAKE_NVML)}
    done = subprocess.run(["bash", str(ROOT / "tests/device/check-gpu-node.sh")], env=env, capture_output=True,
                          text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "serves 1 x NVIDIA Tesla T4" in out  # what `aifacility check --host-gpus` says
    with_gpu = out.split("--- container with-gpu", 1)[1].split("--- container without-gpu", 1)[0]
    without = out.split("--- container without-gpu", 1)[1].split("--- the node agent's GPU figures", 1)[0]
    assert f"CUDA_VISIBLE_DEVICES={T4}\n" in with_gpu and f"NVIDIA_VISIBLE_DEVICES={T4}\n" in with_gpu
    assert "CUDA_VISIBLE_DEVICES=\n" in without and "NVIDIA_VISIBLE_DEVICES=void\n" in without
    assert "device files: \n" in without
    assert "uid: 1000\n" in with_gpu and "uid: 1000\n" in without  # the pod's user, not root
    assert "'/dev/nvidia0'" in out.split("check-gpu-node: with-gpu: given", 1)[1].splitlines()[0]
    figures = out.split("--- the node agent's GPU figures while with-gpu ran:", 1)[1]
    assert 'DCGM_FI_DEV_POWER_USAGE{' in figures and 'pod="with-gpu"' in figures
    assert "\ndevice: " not in with_gpu  # no CUDA computation here, and so:
    assert out.rstrip().endswith("check-gpu-node: FAILED")
