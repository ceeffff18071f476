"""A part of the embedded facility that dies is started again by `aifacility up`, as a Deployment or a kubelet
would start it, and the facility goes on serving alice's session: kill -9 of the interLink plugin, the node
agent, kube-apiserver, Kueue, the OIDC provider and the hub, one after the other. Each time a SLURM job is in
flight on the virtual node: its pod still ends Succeeded with its whole log, and no process of the facility is
left outside `aifacility up`'s process tree (an orphan)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import client

from support.facility import RunningFacility, start_facility, wait_for
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait

pytestmark = pytest.mark.slow

CPU = {"profile": "cpu-small", "image": "ml"}
NAMESPACE = "aifacility"
VNODE = "vk-hpc-leonardo"


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFacility]:
    fac = start_facility(tmp_path_factory.mktemp("parts-die"))
    yield fac
    code = fac.stop()
    assert code == 0, "".join(fac.output[-40:])


def _pid(pattern: str) -> int:
    if pattern.startswith("pidfile:"):  # the hub's command line is the same for every facility on the machine
        return int(Path(pattern.removeprefix("pidfile:")).read_text())
    out = subprocess.run(["pgrep", "-o", "-f", pattern], capture_output=True, text=True).stdout.split()
    assert out, f"no process matches {pattern!r}"
    return int(out[0])


def _alice_answers(fac: RunningFacility, token: str) -> bool:
    try:
        r = requests.get(f"{fac.url}/user/alice/api/status", headers={"Authorization": f"token {token}"},
                         timeout=5)
    except requests.RequestException:
        return False
    return r.status_code == 200



def _offload(api: client.CoreV1Api, name: str) -> None:
    """A SLURM job through the virtual node that runs for a while, so that the kill happens while it runs."""
    api.create_namespaced_pod(NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "nodeSelector": {"kubernetes.io/hostname": VNODE},
                 "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}],
                 "containers": [{"name": "main", "image": "busybox",
                                 "command": ["sh", "-c", "echo begin; sleep 20; echo end"]}]}})


def _phase(api: client.CoreV1Api, name: str) -> str:
    try:
        return api.read_namespaced_pod(name, NAMESPACE).status.phase or ""
    except client.ApiException:
        return ""  # the API server is down, or just came back


def _processes() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (parent pid, command line, environment) of every process we may read."""
    table: dict[int, tuple[int, str, bytes]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        table[int(entry)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd, env)
    return table


def orphans(fac: RunningFacility) -> list[str]:
    """Processes of this facility (its state directory in their command line or environment) that are not in
    `aifacility up`'s process tree. SLURM's job steps are not orphans: slurmstepd is a daemon by design, as on
    every SLURM node."""
    assert fac.proc is not None
    table = _processes()
    state = str(Path(fac.state_dir).resolve())
    mine = {os.getpid(), *_ancestors(table, os.getpid())}

    def lineage(pid: int) -> list[int]:
        return [pid, *_ancestors(table, pid)]

    found = []
    for pid, (_ppid, cmd, env) in table.items():
        if pid in mine or (state not in cmd and state.encode() not in env):
            continue
        line = lineage(pid)
        if fac.proc.pid in line or any("slurmstepd" in table[p][1] for p in line if p in table):
            continue
        found.append(f"{pid} (parent {table[pid][0]}): {cmd[:160]}")
    return found


def _ancestors(table: dict[int, tuple[int, str, bytes]], pid: int) -> list[int]:
    seen = []
    while pid in table and table[pid][0] not in (0, pid) and len(seen) < 100:
        pid = table[pid][0]
        seen.append(pid)
    return seen


@pytest.mark.parametrize("part, pattern", [
    ("interLink plugin (SLURM)", "aifacility_interlink serve .*{state}"),
    ("node agent", "aifacility.embedded.nodeagent --state-dir {state}"),
    ("kube-apiserver", "kube-apiserver .*{state}"),
    ("Kueue", "bwrap .*{state}/controlplane/kueue"),
    ("OIDC provider", "provider.mjs {state}"),
    ("JupyterHub", "pidfile:hub/jupyterhub.pid"),
])
def test_a_part_killed_comes_back_and_alice_s_session_goes_on(facility: RunningFacility, part: str,
                                                              pattern: str) -> None:
    oidc_login(facility.url, "alice")
    if not facility.api("GET", "/users/alice").json()["servers"].get("", {}).get("ready"):
        spawn_and_wait(facility.api, facility.url, "alice", CPU)
    token = facility.api("POST", "/users/alice/tokens", json={"expires_in": 600}).json()["token"]
    state = str(Path(facility.state_dir).resolve())
    pattern = pattern.replace("pidfile:", f"pidfile:{state}/")
    api = facility.core_api()
    job = "offload-" + part.split()[0].lower().replace("(", "")
    _offload(api, job)
    wait_for(lambda: _phase(api, job) == "Running", timeout=120, what="the SLURM job to run")
    pid = _pid(pattern.format(state=state))
    seen = len(facility.output)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: any(line.startswith(f"aifacility: {part} is back") for line in facility.output[seen:]),
             timeout=180, what=f"{part} to be started again")
    assert _pid(pattern.format(state=state)) != pid
    # The session survived (or, for the node agent whose death takes its pods, came back in its pod).
    wait_for(lambda: _alice_answers(facility, token), timeout=120, what="alice's server to answer")
    assert facility.api("GET", "/users/alice").json()["servers"][""]["ready"]
    assert facility.proc is not None and facility.proc.poll() is None
    # The job in flight ended as it would have without the kill: its SLURM job kept running and was followed.
    wait_for(lambda: _phase(api, job) in ("Succeeded", "Failed"), timeout=180, what="the SLURM job to end")
    assert _phase(api, job) == "Succeeded"
    assert api.read_namespaced_pod_log(job, NAMESPACE).split() == ["begin", "end"]
    api.delete_namespaced_pod(job, NAMESPACE)
    # Nothing of the old process lingers: the dead part's children (a hub's services, a plugin's helpers)
    # went with it.
    for _ in range(30):
        left = orphans(facility)
        if not left:
            break
        time.sleep(1)
    assert not left, "\n".join(left)
