"""A part of the embedded facility that dies is started again by `aifacility up`, as a Deployment or a kubelet
would start it, and the facility goes on serving alice's session: kill -9 of the node agent, kube-apiserver,
Kueue, the OIDC provider and the hub, one after the other."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.facility import RunningFacility, start_facility, wait_for
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait

pytestmark = pytest.mark.slow

CPU = {"profile": "cpu-small", "image": "ml"}


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


@pytest.mark.parametrize("part, pattern", [
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
