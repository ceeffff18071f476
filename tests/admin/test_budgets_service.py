"""Budgets kept while work runs, with a real JupyterHub (its server stopped through its API), the real Kueue (the
queued job's Workload held and released) and the accounting ledger: bob goes over his GPU-hour budget, his GPU
session is stopped after the grace period and he sees why on the hub and from his session's token; his queued
job is held; raising the budget releases it; every step is recorded."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UsageRecord
from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.facility import demo_facility_path
from aifacility.jobs.manifest import USER_LABEL, user_label
from aifacility.kueue.api import JOB_UID_LABEL
from aifacility.lifetimes.config import TEMPLATES as LIFETIMES_TEMPLATES
from aifacility.quotas.reservations import Claim, QuotaStore
from support.controlplane import Cluster, wait_for
from support.hub_process import HubProcess

ADMIN = "/services/admin/api"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Iterator[HubProcess]:
    work = tmp_path_factory.mktemp("budget-hub")
    ledger = f"sqlite:///{work / 'ledger.sqlite'}"
    Ledger(ledger).close()
    hub = HubProcess(work)
    env = {**os.environ, "KUBECONFIG": str(EmbeddedCluster.hub_kubeconfig_path(cluster.state_dir)),
           "AIFACILITY_HUB_DATA": str(work), "AIFACILITY_ACCOUNTING_DB": ledger,
           "AIFACILITY_BUDGET_CHECK_SECONDS": "1"}
    hub.launch(textwrap.dedent(f"""
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{"dana"}}
        c.JupyterHub.spawner_class = "simple"
        c.Spawner.cmd = ["{Path(sys.executable).parent / 'jupyterhub-singleuser'}"]
        # as root on the test machine; the session's JupyterLab extension (aifacility_lab) tells of budgets
        c.Spawner.args = ["--allow-root"]
        c.JupyterHub.template_paths = ["{LIFETIMES_TEMPLATES}"]
        c.JupyterHub.services = [{{"name": "test", "api_token": "{hub.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "test", "scopes": ["admin:users", "admin:groups", "admin:servers",
                                     "tokens"], "services": ["test"]}}]
        c.FacilitySpawner.quota_db = "{work / 'quotas.sqlite'}"
        from aifacility.facility import load_facility
        from aifacility.admin import configure
        from aifacility.accounting.hubconfig import configure as configure_usage
        configure(c, load_facility("{demo_facility_path()}"), data_dir="{work}")
        configure_usage(c, db_url="{ledger}")
    """), env=env)
    try:  # a failed set-up stops the hub too
        hub.api("POST", "/users/bob").raise_for_status()
        hub.api("POST", "/groups/physics").raise_for_status()
        hub.api("POST", "/groups/physics/users", json={"users": ["bob"]}).raise_for_status()
        yield hub
    finally:
        hub.api("DELETE", "/users/bob/server")
        hub.stop()


def _token(hub: HubProcess, user: str) -> str:
    return str(hub.api("POST", f"/users/{user}/tokens", json={"note": "budget test"}).json()["token"])


def _queued_job(cluster: Cluster) -> str:
    """bob's job asking for more T4s than physics and the whole cohort have: it waits in the queue for good."""
    name = "bob-budget-test"
    cluster.apply({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "aifacility",
                     "labels": {USER_LABEL: user_label("bob"), "kueue.x-k8s.io/queue-name": "physics"}},
        "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "ml", "command": ["true"],
            "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "20"},
                          "limits": {"nvidia.com/gpu": "20"}}}]}}},
    })
    uid = cluster.get("job", "-n", "aifacility", name)["metadata"]["uid"]
    return wait_for(lambda: next((w["metadata"]["name"] for w in cluster.get(
        "workloads", "-n", "aifacility", "-l", f"{JOB_UID_LABEL}={uid}")["items"]), None), 60,
        message="Kueue to make the job's Workload")


def _active(cluster: Cluster, workload: str) -> bool:
    return bool(cluster.get("workload", "-n", "aifacility", workload)["spec"].get("active", True))


def _budget(hub: HubProcess, dana: str, **budget: Any) -> requests.Response:
    return requests.put(f"{hub.url}{ADMIN}/users/bob", json={"budget": budget}, timeout=60,
                        headers={"Authorization": f"token {dana}"})


def _state(hub: HubProcess, dana: str) -> dict[str, Any]:
    report = requests.get(f"{hub.url}{ADMIN}/budgets", headers={"Authorization": f"token {dana}"}, timeout=60).json()
    return next((s for s in report["states"] if (s["scope"], s["name"]) == ("user", "bob")), {})


def test_a_used_up_budget_stops_the_gpu_session_holds_the_job_and_a_raise_releases_it(
        hub: HubProcess, cluster: Cluster) -> None:
    work: Path = hub.workdir
    # bob's GPU session: a running server, and the T4 it holds in the spawner's reservations.
    assert hub.api("POST", "/users/bob/server").status_code in (201, 202)
    wait_for(lambda: hub.api("GET", "/users/bob").json()["servers"].get("", {}).get("ready"), 60,
             message="bob's server to start")
    asyncio.run(QuotaStore(work / "quotas.sqlite").reserve(Claim("bob", "", ("physics",), "t4", 1), _NoLimits()))
    workload = _queued_job(cluster)
    # Two hours on a T4 so far today, still going.
    ledger = Ledger(f"sqlite:///{work / 'ledger.sqlite'}")
    ledger.ingest([UsageRecord.model_validate({
        "id": "test/bob-t4", "user": "bob", "group": "physics", "kind": "notebook", "resource": "gpu",
        "model": "Tesla-T4", "quantity": 1, "start": (datetime.now(UTC) - timedelta(hours=2)).isoformat()})])

    dana = _token(hub, "dana")
    r = _budget(hub, dana, gpu_hours=1, period="day", on_exhausted="stop", grace_minutes=0.4)
    assert r.status_code == 200, r.text
    wait_for(lambda: _state(hub, dana).get("level") == "exhausted", 30, message="the budget to be used up")
    wait_for(lambda: not _active(cluster, workload), 30, message="the queued job to be held")
    # In JupyterLab, within the grace period: what its extension shows and notifies (the session's own API).
    r = requests.get(f"{hub.url}/user/bob/aifacility/status",
                     headers={"Authorization": f"token {_token(hub, 'bob')}"}, timeout=60)
    [budget] = r.json()["budgets"]
    assert (budget["level"], budget["scope"], budget["name"]) == ("exhausted", "user", "bob"), r.text
    notice = budget["message"]
    assert re.search(r"You used the whole budget \(2(\.\d+)? of 1 GPU-hours today\)", notice), r.text
    assert "accelerator sessions are stopped from" in notice and "(save your work)" in notice, notice
    wait_for(lambda: hub.api("GET", "/users/bob").json()["servers"] == {}, 60,
             message="bob's GPU session to be stopped after the 24 s grace period")

    # bob sees why: from his session's token (what the session's notice reads) and on the hub's home page.
    seen = requests.get(f"{hub.url}/services/usage/budgets", headers={"Authorization": f"token {_token(hub, 'bob')}"},
                        timeout=60).json()
    assert seen["budgets"][0]["level"] == "exhausted" and "used the whole budget" in seen["budgets"][0]["message"]
    assert re.search(r"\(2(\.\d+)? of 1 GPU-hours today\)", seen["budgets"][0]["message"])  # still running
    steps = [e["action"] for e in reversed(seen["events"])]
    assert steps == ["exhausted", "held", "stopped"], seen["events"]
    assert "The t4 session bob's server was stopped: the budget is used up" in seen["events"][0]["message"]
    browser = requests.Session()
    form = browser.get(f"{hub.url}/hub/login", timeout=60).text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form)
    assert xsrf, form
    browser.post(f"{hub.url}/hub/login", data={"username": "bob", "password": "x", "_xsrf": xsrf.group(1)},
                 timeout=60)
    home = browser.get(f"{hub.url}/hub/home", timeout=60).text
    assert 'id="aifacility-budgets"' in home and "used the whole budget" in home and "was stopped" in home

    # dana raises it: the job is released, and it is all on the record.
    assert _budget(hub, dana, gpu_hours=100, period="day", on_exhausted="stop").status_code == 200
    wait_for(lambda: _state(hub, dana).get("level") == "ok", 30, message="the raised budget to be in force")
    wait_for(lambda: _active(cluster, workload), 30, message="the job to be released")
    events = requests.get(f"{hub.url}{ADMIN}/budgets", headers={"Authorization": f"token {dana}"},
                          timeout=60).json()["events"]
    assert [e["action"] for e in reversed(events)] == ["exhausted", "held", "stopped", "released"]
    assert "queued jobs released; the budget was raised" in events[0]["message"]
    audit = requests.get(f"{hub.url}{ADMIN}/audit?scope=user&name=bob", headers={"Authorization": f"token {dana}"},
                         timeout=60).json()
    assert [json.dumps(a["after"]["budget"]["gpu_hours"]) for a in audit] == ["100.0", "1.0"]
    cluster.kubectl("delete", "job", "-n", "aifacility", "bob-budget-test", "--wait=false")


def test_a_group_s_used_up_budget_holds_its_queue_until_the_budget_is_removed(hub: HubProcess,
                                                                              cluster: Cluster) -> None:
    """physics has used two T4 hours today (the first test's record): a 1 GPU-hour budget holds its queue."""
    dana = {"Authorization": f"token {_token(hub, 'dana')}"}
    r = requests.put(f"{hub.url}{ADMIN}/groups/physics", headers=dana, timeout=60,
                     json={"budget": {"gpu_hours": 1, "period": "day", "on_exhausted": "hold"}})
    assert r.status_code == 200, r.text

    def stop_policy() -> str:
        return str(cluster.get("clusterqueue", "physics")["spec"].get("stopPolicy", "None"))

    wait_for(lambda: stop_policy() == "Hold", 30, message="physics' queue to be held")
    assert requests.delete(f"{hub.url}{ADMIN}/groups/physics", headers=dana, timeout=60).status_code == 204
    wait_for(lambda: stop_policy() == "None", 30, message="physics' queue to be released")
    events = requests.get(f"{hub.url}{ADMIN}/budgets", headers=dana, timeout=60).json()["events"]
    assert [e["action"] for e in events[:3]] == ["released", "held", "exhausted"]
    assert "Queue 'physics' holds the group's queued jobs" in events[1]["message"]


def test_budgets_refuse_bad_input(hub: HubProcess) -> None:
    dana = _token(hub, "dana")
    for budget, needle in [({"gpu_hours": -1}, "greater than or equal to 0"),
                           ({"gpu_hours": 1, "period": "year"}, "budget.period"),
                           ({"gpu_hours": 1, "on_exhausted": "panic"}, "budget.on_exhausted"),
                           ({"period": "day"}, "set gpu_hours, cpu_hours or both"),
                           ({"gpu_hours": "NaN"}, "budget.gpu_hours")]:
        r = _budget(hub, dana, **budget)
        assert r.status_code == 400 and needle in r.json()["message"], (budget, r.text)


class _NoLimits:
    def user_limits(self, user: str) -> Any:
        from aifacility.facility.model import Limits

        return Limits()

    def group_limits(self, group: str) -> None:
        return None
