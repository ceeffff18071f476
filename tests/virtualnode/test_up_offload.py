"""The `aifacility up` side: a local SLURM and the plugin start before the embedded cluster, whose node agent
runs the virtual node against them (the plugin URL and token file passed as `up` passes them)."""

from __future__ import annotations

import json
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from vnode_helpers import VNODE

from aifacility.embedded.controlplane import build
from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.launcher.components import cluster_components, offload_components
from aifacility.launcher.supervisor import Supervisor
from aifacility.launcher.up import UpOptions

pytestmark = pytest.mark.slurm


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={kubeconfig}", "-n", "default", *args],
                          input=stdin, capture_output=True, text=True, check=True, timeout=60).stdout


def wait(check: Any, seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = check()
        except (subprocess.CalledProcessError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def conditions(kubeconfig: Path, node: str) -> dict[str, dict[str, str]]:
    obj = json.loads(kubectl(kubeconfig, "get", "node", node, "-o", "json"))
    return {c["type"]: c for c in obj["status"]["conditions"]}


def test_up_starts_slurm_and_the_plugin_before_the_cluster(tmp_path: Path) -> None:
    build.build(quiet=True)
    opts = UpOptions(facility=demo_facility_path(), state_dir=tmp_path / "state")
    facility = load_facility(opts.facility)
    logs = opts.state_dir / "logs"
    offload, interlink = offload_components(opts, facility, logs)
    # The demo reads its HPC site's usage from SLURM's accounting: slurmdbd, and a sacct collector.
    assert [c.name for c in offload] == ["SLURM", "interLink plugin (SLURM)", "accounting collector (sacct, hpc)"]
    assert list(interlink) == [VNODE]  # the HTCondor node gets no plugin here
    sup = Supervisor()
    try:
        for component in offload:
            sup.start(component, timeout=90)
        assert (opts.state_dir / "slurm" / "etc" / "slurm.conf").exists()
        assert "AccountingStorageType=accounting_storage/slurmdbd" in (opts.state_dir / "slurm" / "etc" /
                                                                        "slurm.conf").read_text()
        # the plugin answers only the holder of the token up wrote (0600): not a notebook on this machine
        token_file = opts.state_dir / "secrets" / "interlink-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert str(token_file) in offload[1].argv
        forged = urllib.request.Request(f"{interlink[VNODE]}/create", data=b"{}", method="POST",
                                        headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code == 401
        cluster, parts = cluster_components(opts, facility, interlink)
        for component in parts:
            sup.start(component, timeout=120)
        agent = next(c for c in parts if c.name == "node agent")
        assert f"{VNODE}={interlink[VNODE]}" in agent.argv
        assert agent.env == {"AIFACILITY_INTERLINK_TOKEN_FILE": str(token_file)}
        kubeconfig = cluster.plane.admin_kubeconfig
        # interLink's default ping interval is 30 s; the first ping is at the start.
        wait(lambda: conditions(kubeconfig, VNODE)["Ready"]["status"] == "True", 60)
        htc = wait(lambda: conditions(kubeconfig, "vk-htc-tier1"), 30)
        assert htc["Ready"]["status"] == "False"
        assert htc["InterlinkConnectivity"]["reason"] == "InterlinkNotConfigured"
        assert "--interlink vk-htc-tier1=URL" in htc["InterlinkConnectivity"]["message"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello-hpc", "namespace": "default"},
               "spec": {"restartPolicy": "Never",
                        "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}],
                        "nodeSelector": {"kubernetes.io/hostname": VNODE},
                        "containers": [{"name": "main", "image": "busybox", "command": ["echo", "hello, HPC"]}]}}
        kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(pod))
        wait(lambda: kubectl(kubeconfig, "get", "pod", "hello-hpc", "-o", "jsonpath={.status.phase}") == "Succeeded")
        assert kubectl(kubeconfig, "logs", "hello-hpc").strip() == "hello, HPC"
    finally:
        sup.stop()
    assert not any(c.alive() for c in offload)
