"""The node agent's part of the real-GPU check (issue 16), for a machine that has Python and the NVIDIA driver but
not the facility's build: run by tests/device/check-gpu-node.sh, which needs only what `carry.sh` packs (well under
the device machines' 64 MiB), where check-gpu.sh needs the virtualenv and the control plane's build (1.7 GiB).

Everything in it that meets the driver is the node agent's own code: discovery through the real NVML (hostgpus.py),
the device plugin's allocation (devices.py: the UUIDs in NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES, the
device files), the container sandbox with only those files in its /dev, as the pod's non-root user (sandbox.py),
and the GPU figures from NVML naming the holder (gpumetrics.py). What it leaves out is the control plane around
them (API server, scheduler, Kueue, kubelet), which is the same with or without a GPU and is tested on this
project's machines with NVML faked (tests/nodeagent/test_host_gpus_cluster.py).

Exit 0 when the container given a GPU ran a CUDA computation on it and the one without saw no device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpucheck import PROBE, facility_with_this_machine, verdict  # beside this file

from aifacility.embedded.nodeagent.devices import DeviceManager
from aifacility.embedded.nodeagent.gpumetrics import Holder, read, render
from aifacility.embedded.nodeagent.hostgpus import DiscoveryError, ensure_uvm
from aifacility.embedded.nodeagent.sandbox import bwrap_command

USER = (1000, 100)  # jovyan:users, the notebooks' default securityContext


def container_env(grant: dict[str, str]) -> dict[str, str]:
    """A pod's environment: its own few variables and the device plugin's answer. The driver's library path is
    passed on where the machine sets one (the NVIDIA container toolkit mounts the libraries; here the host's
    /usr and /opt are the image)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
    if os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return {**env, **grant}


def main() -> int:
    try:
        _, served, gpus, resource = facility_with_this_machine()
    except DiscoveryError as e:
        print(f"check-gpu-node: {e}", file=sys.stderr)
        return 2
    problem = ensure_uvm()
    print(f"check-gpu-node: /dev/nvidia-uvm: {problem or 'present'}", flush=True)
    devices = DeviceManager("host", {res: str(len(units)) for res, units in served.devices.items()}, served.devices)
    pods = {"with-gpu": {"name": "probe", "resources": {"limits": {resource: "1"}}},
            "without-gpu": {"name": "probe", "resources": {"limits": {"cpu": "1"}}}}
    work = Path(tempfile.mkdtemp(prefix="aifacility-gpu-node-check-"))
    procs: dict[str, subprocess.Popen[str]] = {}
    for name, spec in pods.items():
        grant = devices.allocate(name, spec)
        pod_tmp = work / name
        pod_tmp.mkdir()
        pod_tmp.chmod(0o1777)  # as the node agent makes a pod's /tmp (root's, which the sandbox maps to the user)
        files = devices.files(name, "probe")
        argv = bwrap_command([sys.executable, "-c", PROBE], pod_tmp=pod_tmp, mounts=[], hostname=name,
                             uid=USER[0], gid=USER[1], devices=files)
        print(f"check-gpu-node: {name}: given {grant}, device files {list(files)}", flush=True)
        procs[name] = subprocess.Popen(argv, env=container_env(grant), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    time.sleep(4)  # the GPU pod holds its device for 8 s after its computation: read the figures meanwhile
    import pynvml

    pynvml.nvmlInit()
    try:
        held = {uuid: [Holder("gpu-check", pod, container) for pod, container in pairs]
                for uuid, pairs in devices.holders().items()}
        figures = render("host", read(pynvml, [g for g in gpus if g.uuid in held] or gpus), held)
    finally:
        pynvml.nvmlShutdown()
    out = {}
    for name, proc in procs.items():
        out[name], _ = proc.communicate(timeout=300)
        print(f"--- container {name} (exit {proc.returncode}):\n{out[name]}", flush=True)
    print(f"--- the node agent's GPU figures while with-gpu ran:\n{figures}", flush=True)
    ok = verdict(out["with-gpu"], out["without-gpu"])
    print("check-gpu-node: " + ("OK: the GPU container saw its device, the other none" if ok else "FAILED"),
          flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
