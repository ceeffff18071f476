"""A real JupyterHub process with FacilitySpawner: REST spawns are validated per user (400), quotas are checked
on the server (403, from reservations written before the hub started), and the form shows only what the user's
groups may use.

The hub's kubeconfig points at a closed loopback port: every refusal tested here happens before the spawner
talks to Kubernetes, which is the point (nothing is created for a refused spawn). The full spawn on the
embedded cluster is the end-to-end suite's.
"""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
from collections.abc import Iterator

import pytest
import requests

from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.launcher.supervisor import free_port
from aifacility.quotas.reservations import Claim, FacilityLimits, QuotaStore
from support.hub_process import HubProcess as Hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("hub")
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{free_port()}"}}}}]
        users: [{{name: u, user: {{token: x}}}}]
        contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
        current-context: c
        """))
    # Carol holds the physics group's only FPGA, reserved by an earlier hub process.
    facility = load_facility(demo_facility_path())
    asyncio.run(QuotaStore(work / "aifacility-quotas.sqlite").reserve(
        Claim("carol", "", ("physics",), "alveo-v70", 1), FacilityLimits(facility)))
    h = Hub(work)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    h.launch(textwrap.dedent(f"""
        from aifacility.facility import load_facility
        from aifacility.spawner import configure
        configure(c, load_facility({str(demo_facility_path())!r}), facility_path={str(demo_facility_path())!r},
                  data_dir={str(work)!r})
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.JupyterHub.services = [{{"name": "tester", "api_token": "{h.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
                                     "scopes": ["admin:users", "admin:servers", "admin:groups"]}}]
    """), env=env)
    try:
        for group, users in (("physics", ["alice", "bob"]), ("ml", ["alice"])):
            for u in users:
                h.api("POST", f"/users/{u}")
            r = h.api("POST", f"/groups/{group}", json={"users": users})
            assert r.status_code in (201, 409), r.text
            if r.status_code == 409:
                h.api("POST", f"/groups/{group}/users", json={"users": users})
        yield h
    finally:
        h.stop(timeout=20)


def test_rest_spawn_of_a_forbidden_profile_is_a_400_that_says_why(hub: Hub) -> None:
    r = hub.api("POST", "/users/bob/server", json={"profile": "mig-1g-10gb"})
    assert r.status_code == 400, r.text
    msg = r.json()["message"]
    assert "'mig-1g-10gb' is only open to the group(s) ml" in msg
    assert "Choose one of: cpu-small, cpu-large, gpu-t4, fpga-v70" in msg
    # Nothing is left running or pending: bob can spawn again at once and gets the same answer.
    assert hub.api("GET", "/users/bob").json()["servers"] == {}


def test_rest_spawn_of_an_unknown_profile_is_a_400(hub: Hub) -> None:
    r = hub.api("POST", "/users/alice/server", json={"profile": "gpu-h100"})
    assert r.status_code == 400, r.text
    assert "There is no profile 'gpu-h100'" in r.json()["message"]


def test_group_quota_is_enforced_for_rest_spawns(hub: Hub) -> None:
    r = hub.api("POST", "/users/bob/server", json={"profile": "fpga-v70"})
    assert r.status_code == 403, r.text
    msg = r.json()["message"]
    assert "group 'physics' may use 1 AMD Alveo V70 unit(s) at once and its members use 1" in msg
    assert "carol (default server): 1" in msg


def _login(hub: Hub, user: str) -> requests.Session:
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    xsrf = s.cookies.get("_xsrf", path="/hub/") or s.cookies.get("_xsrf")
    r = s.post(f"{hub.url}/hub/login", data={"username": user, "password": "x", "_xsrf": xsrf}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    return s


def test_the_form_shows_each_user_only_their_groups_profiles(hub: Hub) -> None:
    alice = _login(hub, "alice").get(f"{hub.url}/hub/spawn", timeout=60).content.decode()
    bob = _login(hub, "bob").get(f"{hub.url}/hub/spawn", timeout=60).content.decode()
    assert 'value="mig-1g-10gb"' in alice and 'value="mig-1g-10gb"' not in bob
    assert 'value="fpga-v70"' in bob
    # the accelerator is named; availability is unknown here (no cluster), and said so
    assert re.search(r"1 \u00d7 A100 MIG 1g\.10gb slice \(10Gi\) —\s*<span class=\"aif-free\">availability unknown",
                     alice)
    assert 'name="profile-option-gpu-t4--queue"' in bob
    # What the quotas still allow: carol holds the physics group's only FPGA, so bob (physics) has none left,
    # while alice's FPGA sessions are paid by ml (2 FPGAs, none in use).
    assert re.search(r'fpga-v70.*?data-quota-left="0">your quota is used up', bob, re.DOTALL)
    assert re.search(r'fpga-v70.*?data-quota-left="2">your quota allows 2 more', alice, re.DOTALL)
