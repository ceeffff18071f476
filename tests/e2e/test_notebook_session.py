"""The foundation end to end: a physicist logs in, picks a profile, gets JupyterLab in a pod of that profile on
the embedded cluster, runs a cell there, and stopping the server removes the pod and its process."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from support.browser import screenshot
from support.facility import RunningFacility, wait_for
from support.ledger import usage_records
from support.ui import login, run_cell, wait

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids



def test_alice_runs_a_cell_in_a_mig_pod_and_stopping_removes_it(facility: RunningFacility, browser) -> None:
    login(browser, facility.url, "alice", shot="login-iam")
    form = wait(browser, 90).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form#spawn_form")))
    choice = form.find_element(By.CSS_SELECTOR, 'input[name="profile"][value="mig-1g-10gb"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", choice)
    screenshot(browser, "spawn-page")
    submit = form.find_element(By.CSS_SELECTOR, "[type=submit]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", submit)

    wait(browser, 240).until(lambda d: "/user/alice/lab" in d.current_url)
    wait(browser, 120).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LauncherCard")))
    screenshot(browser, "jupyterlab")

    out = run_cell(browser, "import os; print('POD', os.environ['HOSTNAME'], os.environ['NVIDIA_VISIBLE_DEVICES'])",
                   expect="POD")
    screenshot(browser, "jupyterlab-cell")
    _, pod_name, devices = out.split()[:3]

    api = facility.core_api()
    namespace = "aifacility"
    pod = api.read_namespaced_pod(pod_name, namespace)
    assert pod.metadata.labels["hub.jupyter.org/username"] == "alice"
    assert pod.spec.node_name == "gpu-a100-01"
    limits = pod.spec.containers[0].resources.limits
    assert limits["nvidia.com/mig-1g.10gb"] == "1"
    assert devices.startswith("MIG-"), devices  # what the NVIDIA device plugin hands a MIG-slice container
    pod_ip = pod.status.pod_ip
    # a bridge address in the pod's own network namespace (10.x), or a loopback alias where the machine
    # cannot make network namespaces
    assert ipaddress.ip_address(pod_ip).is_private and pod_ip != "127.0.0.1", pod_ip
    assert processes_mentioning(f"--ServerApp.ip={pod_ip}"), "the pod's server process should be running"
    # The accounting collector records the session while it runs, charged to the group on the pod.
    group = pod.metadata.labels["aifacility.io/group"]
    assert group in ("physics", "ml")
    mig_record = f"pod:{pod.metadata.uid}/mig"
    wait_for(lambda: mig_record in _ledger(facility), timeout=60, what="the session's usage record")
    row = _ledger(facility)[mig_record]
    assert (row.user_name, row.group_name, row.kind, row.model, row.end_ts) == ("alice", group, "notebook",
                                                                                 "1g.10gb", None)

    assert facility.api("DELETE", "/users/alice/server").status_code in (202, 204)

    def pod_gone() -> bool:
        return not any(p.metadata.name == pod_name for p in api.list_namespaced_pod(namespace).items)

    wait_for(pod_gone, timeout=90, what="the notebook pod to be deleted")
    wait_for(lambda: not processes_mentioning(f"--ServerApp.ip={pod_ip}"), timeout=30,
             what="the notebook process to end")
    wait_for(lambda: _ledger(facility)[mig_record].end_ts is not None, timeout=60, what="the usage record to close")
    assert _ledger(facility)[mig_record].end_ts > _ledger(facility)[mig_record].start_ts
    # ... and she reads it on the hub: her own usage this month, the MIG slice among it
    browser.get(f"{facility.url}/services/usage/")
    wait(browser, 60).until(lambda d: "Usage of alice by resource" in d.page_source)
    assert "<td>mig</td>" in browser.page_source
    screenshot(browser, "usage-page")



def _ledger(facility: RunningFacility) -> dict[str, Any]:
    return usage_records(facility.state_dir)
