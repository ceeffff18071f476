"""The admin service in a real JupyterHub, writing the ClusterQueues of the real control plane: admins change
policies (pages, REST API) with an audit trail, the group's queue follows, everyone else gets 403, and bad input
gets a message with nothing saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from admin_support import launch_admin_hub

from aifacility.facility import demo_facility_path
from support.controlplane import Cluster, wait_for
from support.hub_process import HubProcess
from support.queues import nominal_quota

ADMIN = "/services/admin/"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Iterator[HubProcess]:
    work = tmp_path_factory.mktemp("admin-hub")
    hub = launch_admin_hub(work, cluster, demo_facility_path(), AIFACILITY_ADMIN_QUEUE_SYNC_SECONDS="1")
    try:  # a failed set-up stops the hub too
        hub.api("POST", "/users/bob").raise_for_status()  # dana exists: an admin_users entry
        hub.api("POST", "/groups/physics").raise_for_status()
        wait_for(lambda: requests.get(f"{hub.url}{ADMIN}api/policies", timeout=5).status_code == 403, 60,
                 message="the admin service to answer")
        yield hub
    finally:
        hub.stop()


def _token(hub: HubProcess, user: str) -> str:
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "admin test"})
    r.raise_for_status()
    return str(r.json()["token"])


def _call(hub: HubProcess, method: str, path: str, user: str, **kw: Any) -> requests.Response:
    return requests.request(method, f"{hub.url}{ADMIN}{path}", timeout=60,
                            headers={"Authorization": f"token {_token(hub, user)}"}, **kw)


def _nominal(cluster: Cluster, group: str, flavor: str) -> str:
    return nominal_quota(cluster.get("clusterqueue", group), flavor)


def test_an_admin_changes_a_group_quota_and_the_queue_and_audit_trail_follow(hub: HubProcess,
                                                                              cluster: Cluster) -> None:
    assert _nominal(cluster, "physics", "t4") == "4"
    r = _call(hub, "PUT", "api/groups/physics", "dana", json={"accelerators": {"t4": 1}, "borrowing": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["in_force"]["accelerators"] == {"t4": 1, "alveo-v70": 1} and body["file"]["accelerators"]["t4"] == 4
    assert body["change"]["actor"] == "dana" and body["change"]["before"] is None
    assert _nominal(cluster, "physics", "t4") == "1"  # written before the answer
    cq = cluster.get("clusterqueue", "physics")
    assert all(res.get("borrowingLimit") == "0" for rg in cq["spec"]["resourceGroups"] for f in rg["flavors"]
               for res in f["resources"])
    trail = _call(hub, "GET", "api/audit?scope=group&name=physics", "dana").json()
    assert trail[0]["after"] == {"accelerators": {"t4": 1}, "borrowing": False}

    # Someone re-applies the facility file's queues (a Helm upgrade, `aifacility up`): the policy comes back.
    from aifacility.facility import load_facility
    from aifacility.kueue.render import cluster_queue

    cluster.embedded.plane.apply([cluster_queue(load_facility(), "physics")])
    wait_for(lambda: _nominal(cluster, "physics", "t4") == "1", 30, message="the admin service to restore t4: 1")

    assert _call(hub, "DELETE", "api/groups/physics", "dana").status_code == 204
    assert _nominal(cluster, "physics", "t4") == "4"
    assert _call(hub, "GET", "api/audit?limit=1", "dana").json()[0]["after"] is None


def test_others_get_403_on_every_page_and_api(hub: HubProcess) -> None:
    for method, path in [("GET", ""), ("GET", "groups/physics"), ("GET", "api/policies"),
                         ("GET", "api/groups/physics"), ("GET", "api/audit"), ("PUT", "api/groups/physics"),
                         ("DELETE", "api/users/bob"), ("POST", "groups/physics")]:
        r = _call(hub, method, path, "bob", json={"servers": 100} if method == "PUT" else None)
        assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
    assert requests.get(f"{hub.url}{ADMIN}api/policies", timeout=30).status_code == 403  # no credentials
    assert _call(hub, "GET", "api/policies", "dana").json()["groups"][0]["policy"] == {}


def test_bad_input_gets_a_message_and_saves_nothing(hub: HubProcess, cluster: Cluster) -> None:
    before = _call(hub, "GET", "api/audit", "dana").json()
    cases = [
        ("PUT", "api/groups/physics", {"json": {"accelerators": {"t4": -2}}}, 400, "greater than or equal to 0"),
        ("PUT", "api/groups/physics", {"json": {"accelerators": {"h100": 1}}}, 400, "unknown accelerator 'h100'"),
        ("PUT", "api/groups/astro", {"json": {"servers": 1}}, 400, "There is no group 'astro'"),
        ("PUT", "api/users/nobody", {"json": {"servers": 1}}, 400, "There is no user 'nobody'"),
        ("PUT", "api/groups/admins", {"json": {"queue_cpu": "4"}}, 400, "has no Kueue queue"),
        ("PUT", "api/groups/physics", {"data": "{not json"}, 400, "must be JSON"),
        ("PUT", "api/groups/physics", {"json": {"servers": "2"}}, 400, "valid integer"),
        ("PUT", "api/groups/physics", {"json": {"accelerators": {f"a{i}": 1 for i in range(300)}}}, 400,
         "at most 256"),
        ("PUT", "api/groups/ph%20ysics", {"json": {}}, 400, "is not a group name"),
        ("PUT", "api/groups/physics", {"data": "x" * 70_000}, 413, "at most"),
        ("GET", "api/audit?limit=0", {}, 400, "from 1 to 1000"),
        ("PUT", "api/users/bob", {"json": {"budget": {"gpu_hours": 5}}}, 400, "keeps no accounting ledger"),
        ("DELETE", "api/groups/astro", {}, 404, "There is no group 'astro'"),
    ]
    for method, path, kw, status, needle in cases:
        r = _call(hub, method, path, "dana", **kw)
        assert r.status_code == status and needle in r.json()["message"], (path, kw, r.status_code, r.text[:400])
    assert _call(hub, "GET", "api/audit", "dana").json() == before
    assert _nominal(cluster, "physics", "t4") == "4"


def test_a_user_policy_through_the_form_needs_the_xsrf_token(hub: HubProcess) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"token {_token(hub, 'dana')}"
    page = session.get(f"{hub.url}{ADMIN}users/bob", timeout=30)
    assert page.status_code == 200 and "Policy of user bob" in page.text
    r = session.post(f"{hub.url}{ADMIN}users/bob", data={"servers": "3", "acc:t4": ""}, timeout=30,
                     allow_redirects=False)
    assert r.status_code == 302, r.text[:300]
    wrong = session.post(f"{hub.url}{ADMIN}users/bob", data={"servers": "-1"}, timeout=30)
    assert wrong.status_code == 400 and "servers: -1 must be from 0 to 100000" in wrong.text
    assert 'value="-1"' in wrong.text  # what was typed stays on the form
    view = session.get(f"{hub.url}{ADMIN}api/users/bob", timeout=30).json()
    assert view["in_force"]["servers"] == 3 and view["file"]["servers"] == 1
    assert session.delete(f"{hub.url}{ADMIN}api/users/bob", timeout=30).status_code == 204


def test_the_cli_sets_shows_audits_and_resets_a_group_policy(hub: HubProcess, cluster: Cluster) -> None:
    env = {**os.environ, "AIFACILITY_HUB_URL": hub.url, "JUPYTERHUB_API_TOKEN": _token(hub, "dana")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aifacility.cli", "admin", *args], env=env, text=True,
                              capture_output=True, timeout=60)

    out = cli("set", "group", "ml", "--accelerator", "mig-1g-10gb=1", "--queue-accelerator", "mig-1g-10gb=2",
              "--queue-cpu", "24")
    assert out.returncode == 0, out.stderr
    assert "mig-1g-10gb 1" in out.stdout and "cpu 24" in out.stdout
    assert _nominal(cluster, "ml", "mig-1g-10gb") == "2"
    shown = json.loads(cli("show", "group", "ml", "--json").stdout)
    assert shown["policy"] == {"accelerators": {"mig-1g-10gb": 1}, "queue_accelerators": {"mig-1g-10gb": 2},
                               "queue_cpu": "24"}
    assert "dana  group ml: null -> " in cli("audit", "--limit", "1").stdout
    bad = cli("set", "group", "ml", "--accelerator", "mig-1g-10gb=-1")
    assert bad.returncode == 1 and "expected NAME=COUNT" in bad.stderr
    bob = subprocess.run([sys.executable, "-m", "aifacility.cli", "admin", "reset", "group", "ml"], text=True,
                         env={**env, "JUPYTERHUB_API_TOKEN": _token(hub, "bob")}, capture_output=True, timeout=60)
    assert bob.returncode == 1 and "Only the facility's administrators may use" in bob.stderr
    assert cli("reset", "group", "ml").returncode == 0
    assert _nominal(cluster, "ml", "mig-1g-10gb") == "4"
