"""Dask from a notebook: alice's kernel starts a cluster with `GatewayCluster()`, scales it to 4 workers that
Kueue admits one by one in her group's queue, and computes with them; a cluster over her per-user limit is
refused with a message that says what to do. Its dashboard link opens in her browser and in JupyterLab's Dask
sidebar (dask-labextension), whose "+ NEW" makes clusters through the gateway too."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests

from aifacility.embedded.controlplane import build
from support.facility import RunningFacility
from support.kernel import run_in_kernel
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait, stop_and_wait

pytestmark = pytest.mark.slow

CPU = {"profile": "cpu-small", "image": "ml"}

START = r'''
import json
from dask_gateway import Gateway
gateway = Gateway()
# kept when this kernel ends, so that the test can look at its pods (the fixture shuts it down)
cluster = gateway.new_cluster(group="ml", worker_cores=1, worker_memory=1, shutdown_on_close=False)
cluster.scale(4)
client = cluster.get_client()
client.wait_for_workers(4, timeout=300)
total = client.submit(sum, client.map(lambda x: x * x, range(10))).result()
workers = len(client.scheduler_info()["workers"])
second = gateway.new_cluster(group="ml")
try:
    gateway.new_cluster(group="ml")
    refusal = ""
except Exception as e:
    refusal = str(e)
second.shutdown()
print("RESULT " + json.dumps({"total": total, "workers": workers, "refusal": refusal, "name": cluster.name,
                              "second": second.name,
                              "dashboard": cluster.dashboard_link}))
'''

STOP = r'''
from dask_gateway import Gateway
for c in Gateway().list_clusters():
    Gateway().connect(c.name).shutdown()
print("RESULT {}")
'''


def kubectl_json(fac: RunningFacility, *args: str) -> Any:
    out = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={fac.kubeconfig}", "-n", "aifacility", "get",
                          *args, "-o", "json"], capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def alice(facility: RunningFacility) -> Any:
    oidc_login(facility.url, "alice")
    spawn_and_wait(facility.api, facility.url, "alice", CPU)
    token = facility.api("POST", "/users/alice/tokens", json={"expires_in": 3600, "note": "dask e2e"}).json()["token"]
    yield token
    run_in_kernel(facility.url, "alice", token, STOP, timeout=120)
    stop_and_wait(facility.api, "alice")


def test_a_gateway_cluster_computes_with_four_workers_each_admitted_by_kueue(facility: RunningFacility,
                                                                            alice: str) -> None:
    printed = run_in_kernel(facility.url, "alice", alice, START, timeout=500)
    result = json.loads(printed.split("RESULT ", 1)[1])
    assert result["total"] == sum(x * x for x in range(10)) and result["workers"] == 4
    assert "You already have 2 Dask cluster(s) charged to group 'ml'" in result["refusal"]
    assert result["dashboard"].startswith("/services/dask-gateway/clusters/")
    check_dashboard(facility, alice, result["dashboard"])

    selector = f"aifacility.io/dask-cluster={result['name'].split('.')[-1]}"
    pods = kubectl_json(facility, "pods", "-l", selector)["items"]
    roles = sorted(p["metadata"]["labels"]["aifacility.io/dask-role"] for p in pods)
    assert roles == ["scheduler", "worker", "worker", "worker", "worker"], roles
    workloads = kubectl_json(facility, "workloads")["items"]
    owned = {ref["name"]: w for w in workloads for ref in w["metadata"].get("ownerReferences", [])}
    for pod in pods:
        labels, name = pod["metadata"]["labels"], pod["metadata"]["name"]
        assert labels["aifacility.io/user"] == "alice" and labels["aifacility.io/kind"] == "dask"
        assert pod["spec"]["securityContext"]["runAsUser"] == 1000
        if labels["aifacility.io/dask-role"] == "scheduler":
            assert name not in owned and "kueue.x-k8s.io/queue-name" not in labels
            continue
        assert labels["kueue.x-k8s.io/queue-name"] == "ml" and labels["aifacility.io/group"] == "ml"
        wl = owned[name]
        assert wl["spec"]["queueName"] == "ml", wl["spec"]
        assert "dask" in json.dumps({k: v for k, v in wl["spec"].items() if k.startswith("priority")}), wl["spec"]
        admitted = {c["type"]: c["status"] for c in wl["status"]["conditions"]}
        assert admitted.get("Admitted") == "True", wl["status"]

    # The cluster that was shut down leaves no pod behind (its scheduler pod once outlived it).
    second = f"aifacility.io/dask-cluster={result['second'].split('.')[-1]}"
    deadline = time.monotonic() + 60
    while kubectl_json(facility, "pods", "-l", second)["items"] and time.monotonic() < deadline:
        time.sleep(1)
    assert kubectl_json(facility, "pods", "-l", second)["items"] == []


def check_dashboard(fac: RunningFacility, token: str, link: str) -> None:
    """The link opens the scheduler's dashboard through the facility's proxy (as the browser follows it), and
    the Dask sidebar's server side finds its plots from inside alice's session (its "dashboard-check")."""
    page = requests.get(fac.url + link, timeout=30)
    assert page.status_code == 200 and "Dask" in page.text, (page.status_code, page.text[:300])
    checked = requests.get(f"{fac.url}/user/alice/dask/dashboard-check/{quote(link, safe='')}",
                           headers={"Authorization": f"token {token}"}, timeout=60).json()
    assert checked["isActive"] is True, checked
    assert "Individual Task Stream" in checked["plots"], sorted(checked["plots"])


def test_the_dask_sidebar_makes_clusters_through_the_gateway(facility: RunningFacility, alice: str) -> None:
    api = f"{facility.url}/user/alice/dask/clusters"
    auth = {"Authorization": f"token {alice}"}
    made = requests.put(api, headers=auth, timeout=300)
    assert made.status_code == 200, made.text[:500]
    model = made.json()
    try:
        # a GatewayCluster: its dashboard is the gateway's, and the gateway lists it as alice's
        assert model["dashboard_link"].startswith("/services/dask-gateway/clusters/"), model
        listed = requests.get(api, headers=auth, timeout=30).json()
        assert [c["id"] for c in listed] == [model["id"]]
        check_dashboard(facility, alice, model["dashboard_link"])
        names = run_in_kernel(facility.url, "alice", alice,
                              "from dask_gateway import Gateway\n"
                              "print('RESULT ' + ' '.join(c.name for c in Gateway().list_clusters()))", timeout=120)
        assert model["dashboard_link"].split("/")[-2] in names.split("RESULT ", 1)[1].split()
    finally:
        gone = requests.delete(f"{api}/{model['id']}", headers=auth, timeout=120)
        assert gone.status_code in (200, 204), gone.text[:300]
