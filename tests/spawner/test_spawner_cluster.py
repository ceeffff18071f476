"""FacilitySpawner in a real JupyterHub against the embedded cluster (the real control plane and Kueue, with the
hub's own service account): a MIG session with its volumes, and a queued session that waits in Kueue with its
position shown, then starts when a slice is freed.

(The whole facility in a browser is the end-to-end suite's; here the hub uses the dummy authenticator.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane import build
from aifacility.facility import load_facility
from aifacility.launcher.supervisor import Supervisor
from support.hub_process import HubProcess

pytestmark = pytest.mark.slow

TOKEN = "spawner-cluster-test-token"


@dataclass
class Setup:
    url: str
    state: Path
    data: Path
    kubeconfig: Path
    hub_kubeconfig: Path

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api{path}", timeout=60,
                                headers={"Authorization": f"token {TOKEN}"}, **kw)

    def kubectl(self, *args: str) -> Any:
        argv = [str(build.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), "-n", "aifacility", *args]
        out = subprocess.run([*argv, "-o", "json"], check=True, capture_output=True, text=True, timeout=60).stdout
        return json.loads(out)

    def reservations(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.data / "aifacility-quotas.sqlite") as db:
            return db.execute("SELECT user, server, grp, accelerator, units, queued FROM reservations "
                              "ORDER BY user").fetchall()


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s; log:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("spawner-cluster")
    state, data = work / "state", work / "hub"
    data.mkdir()
    cluster = EmbeddedCluster(load_facility(None), state)
    sup = Supervisor()
    hub = HubProcess(work, token=TOKEN)
    try:
        for component in cluster.components():
            sup.start(component, timeout=120)
        # The hub's own identity, as on a cluster: the chart's service account and RBAC.
        env = {**os.environ, "KUBECONFIG": str(cluster.hub_kubeconfig)}
        env.pop("AIFACILITY_FACILITY", None)
        hub.launch(textwrap.dedent(f"""
            from aifacility.facility import load_facility
            from aifacility.spawner import configure
            configure(c, load_facility(), data_dir={str(data)!r})
            c.JupyterHub.authenticator_class = "dummy"
            c.Authenticator.allow_all = True
            c.JupyterHub.cleanup_servers = True
            c.JupyterHub.services = [{{"name": "tester", "api_token": "{TOKEN}"}}]
            c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
                                         "scopes": ["admin:users", "admin:servers", "admin:groups"]}}]
        """), env=env)
        s = Setup(hub.url, state, data, cluster.plane.admin_kubeconfig, cluster.hub_kubeconfig)
        users = {"alice": ["physics", "ml"], "u1": ["ml"], "u2": ["ml"], "u3": ["ml"]}
        for u in users:
            s.api("POST", f"/users/{u}")
        for g in ("physics", "ml"):
            s.api("POST", f"/groups/{g}", json={"users": [u for u, gs in users.items() if g in gs]})
        yield s
    finally:
        hub.stop()
        sup.stop()


def _spawn(s: Setup, user: str, options: dict[str, Any], ready: bool = True) -> None:
    r = s.api("POST", f"/users/{user}/server", json=options)
    assert r.status_code in (201, 202), r.text
    if ready:
        _wait(f"{user}'s server", lambda: bool(s.api("GET", f"/users/{user}").json()["servers"].get("", {})
                                             .get("ready")), 120, Path(os.devnull))


def test_a_mig_session_gets_its_slice_node_and_volumes(setup: Setup) -> None:
    _spawn(setup, "alice", {"profile": "mig-1g-10gb", "image": "ml"})
    pod = setup.kubectl("get", "pod", "jupyter-alice")
    assert pod["spec"]["nodeName"] == "gpu-a100-01"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert {"home-alice", "group-physics", "group-ml"} <= claims
    pvcs = {p["metadata"]["name"]: p for p in setup.kubectl("get", "pvc")["items"]}
    assert pvcs["group-ml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert (setup.state / "volumes" / "aifacility" / "home-alice").is_dir()
    # The MIG profile is open to ml only, so ml pays although alice is in physics too.
    assert setup.reservations() == [("alice", "", "ml", "mig-1g-10gb", 1, 0)]
    assert setup.api("DELETE", "/users/alice/server").status_code in (202, 204)
    _wait("alice's reservation to go", lambda: not setup.reservations(), 60, Path(os.devnull))


def test_a_queued_session_waits_with_its_position_and_starts_when_a_slice_frees(setup: Setup) -> None:
    _spawn(setup, "u1", {"profile": "mig-3g-40gb"})
    _spawn(setup, "u2", {"profile": "mig-3g-40gb"})
    # Both A100 3g.40gb slices of group ml are in use: a direct start is refused with the limit...
    r = setup.api("POST", "/users/u3/server", json={"profile": "mig-3g-40gb"})
    assert r.status_code == 403 and "group 'ml' may use 2 A100 MIG 3g.40gb slice unit(s)" in r.json()["message"]
    # ...and a queued one waits in the group's LocalQueue, gated by Kueue.
    _spawn(setup, "u3", {"profile": "mig-3g-40gb", "queue": True}, ready=False)
    _wait("u3's pod", lambda: any(p["metadata"]["name"] == "jupyter-u3"
                                  for p in setup.kubectl("get", "pods")["items"]), 60, Path(os.devnull))
    pod = setup.kubectl("get", "pod", "jupyter-u3")
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "ml"
    # Kueue's admission gate (Kueue 0.19 adds its topology gate beside it).
    assert "kueue.x-k8s.io/admission" in [g["name"] for g in pod["spec"].get("schedulingGates", [])]

    messages: list[str] = []
    with requests.get(f"{setup.url}/hub/api/users/u3/server/progress", stream=True, timeout=120,
                      headers={"Authorization": f"token {TOKEN}"}) as stream:
        freed = False
        for line in stream.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            messages.append(event.get("message", ""))
            if "Queued in the 'ml' queue" in event.get("message", "") and not freed:
                assert setup.reservations()[-1][-1] == 1  # u3 is held as queued
                freed = True
                assert setup.api("DELETE", "/users/u1/server").status_code in (202, 204)
            if event.get("ready"):
                break
    queued = next(m for m in messages if "Queued in the 'ml' queue" in m)
    assert "for 1 x A100 MIG 3g.40gb slice: next in line." in queued
    assert "Waiting for: " in queued and "mig-3g.40gb" in queued
    assert any("Admitted from the 'ml' queue" in m for m in messages)
    assert setup.kubectl("get", "pod", "jupyter-u3")["status"]["phase"] == "Running"
    # Admitted: u3's slice now counts like any other session's.
    assert ("u3", "", "ml", "mig-3g-40gb", 1, 0) in setup.reservations()
    for u in ("u2", "u3"):
        setup.api("DELETE", f"/users/{u}/server")


def test_a_stock_kubespawner_spawns_on_the_embedded_cluster(setup: Setup, tmp_path: Path) -> None:
    """KubeSpawner itself, without FacilitySpawner: its pod has the command as args to the image's ENTRYPOINT
    (which the node agent runs from the facility file's images table), as Zero to JupyterHub's pods do."""
    image = load_facility().images[0].image
    hub = HubProcess(tmp_path / "stock")
    hub.workdir.mkdir()
    hub.launch(textwrap.dedent(f"""
        c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
        c.KubeSpawner.namespace = "aifacility"
        c.KubeSpawner.image = {image!r}
        c.KubeSpawner.cpu_guarantee = 0.1
        c.KubeSpawner.mem_guarantee = "128M"
        c.KubeSpawner.http_timeout = 120
        # Each pod has its own address here, as on a pod network: the server listens on it.
        c.KubeSpawner.environment = {{"POD_IP": {{"valueFrom": {{"fieldRef": {{"fieldPath": "status.podIP"}}}}}}}}
        c.KubeSpawner.cmd = ["jupyterhub-singleuser"]  # as Zero to JupyterHub's singleuser.cmd
        c.KubeSpawner.args = ["--ServerApp.ip=$(POD_IP)"]
        c.KubeSpawner.uid = 1000  # as Zero to JupyterHub's singleuser.uid
        c.KubeSpawner.environment["HOME"] = "/tmp"  # no home volume in this minimal configuration
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.JupyterHub.cleanup_servers = True
        c.JupyterHub.services = [{{"name": "tester", "api_token": "{hub.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
                                     "scopes": ["admin:users", "admin:servers", "access:servers"]}}]
    """), env={**os.environ, "KUBECONFIG": str(setup.hub_kubeconfig)})
    try:
        assert hub.api("POST", "/users/stock").status_code == 201
        assert hub.api("POST", "/users/stock/server").status_code in (201, 202)
        deadline = time.monotonic() + 120
        while not hub.api("GET", "/users/stock").json()["servers"].get("", {}).get("ready"):
            if time.monotonic() > deadline:
                logs = subprocess.run([str(build.binary("kubectl")), "--kubeconfig", str(setup.kubeconfig), "-n",
                                       "aifacility", "logs", "jupyter-stock"], capture_output=True, text=True)
                raise AssertionError(f"the stock spawner's server never answered; its log:\n{logs.stdout[-3000:]}"
                                     f"{logs.stderr[-500:]}\nthe hub's:\n{hub.log()[-2000:]}")
            time.sleep(0.5)
        (container,) = setup.kubectl("get", "pod", "jupyter-stock")["spec"]["containers"]
        assert "command" not in container and container["args"][0] == "jupyterhub-singleuser"
        r = requests.get(f"{hub.url}/user/stock/api/status", timeout=30,
                         headers={"Authorization": f"token {hub.token}"})
        assert r.status_code == 200, r.text
        assert hub.api("DELETE", "/users/stock/server").status_code in (202, 204)
    finally:
        hub.stop()
