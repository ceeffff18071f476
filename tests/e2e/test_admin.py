"""The admin service on the running facility, in Chromium: dana (an admin) lowers physics' T4 quota on the admin
page, bob's next spawn obeys it and the group's ClusterQueue follows; the audit trail shows the change; bob gets
403 on the admin pages and API."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from aifacility.embedded.controlplane import build
from aifacility.jobs.client import JobsClient, JobsError
from support.browser import chromium, screenshot
from support.controlplane import wait_for
from support.facility import RunningFacility
from support.oidc_login import oidc_login
from support.queues import nominal_quota
from support.ui import login, wait

pytestmark = pytest.mark.slow


def _t4_nominal(facility: RunningFacility) -> str:
    out = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={facility.kubeconfig}", "get", "clusterqueue",
                          "physics", "-o", "json"], capture_output=True, text=True, check=True, timeout=60).stdout
    return nominal_quota(json.loads(out), "t4")


def test_an_admin_lowers_a_group_quota_in_the_browser_and_the_next_spawn_obeys(
        facility: RunningFacility, browser: webdriver.Chrome) -> None:
    admin_api = f"{facility.url}/services/admin/api"
    ops = {"Authorization": f"token {facility.admin_token}"}
    assert _t4_nominal(facility) == "4"
    try:
        login(browser, facility.url, "dana")
        browser.get(f"{facility.url}/services/admin/")
        wait(browser).until(ec.presence_of_element_located((By.ID, "group-physics")))
        browser.find_element(By.CSS_SELECTOR, "#group-physics a").click()
        box = wait(browser).until(ec.presence_of_element_located((By.ID, "acc:t4")))
        assert box.get_attribute("placeholder") == "4"  # the facility file's value
        box.send_keys("0")
        browser.find_element(By.ID, "save").click()
        wait(browser).until(ec.presence_of_element_located((By.ID, "saved")))
        trail = browser.find_element(By.ID, "audit").text
        assert "dana" in trail and '{"accelerators": {"t4": 0}}' in trail, trail
        screenshot(browser, "admin-group-policy")
        assert _t4_nominal(facility) == "0"  # physics' ClusterQueue follows at once

        oidc_login(facility.url, "bob")
        r = facility.api("POST", "/users/bob/server", json={"profile": "gpu-t4"})
        assert r.status_code == 403, r.text
        assert "group 'physics' may use 0 NVIDIA Tesla T4 unit(s)" in r.json()["message"], r.text
        assert facility.api("GET", "/users/bob").json()["servers"] == {}

        # bob, in his own browser session, reaches neither the pages nor the API.
        bobs = chromium()
        try:
            login(bobs, facility.url, "bob")
            bobs.get(f"{facility.url}/services/admin/groups/physics")
            wait(bobs).until(lambda d: "403" in d.find_element(By.TAG_NAME, "body").text)
            assert "acc:t4" not in bobs.page_source
        finally:
            bobs.quit()
        token = facility.api("POST", "/users/bob/tokens", json={"note": "admin e2e"}).json()["token"]
        for method, path in [("GET", "policies"), ("PUT", "groups/physics"), ("GET", "audit")]:
            r = requests.request(method, f"{admin_api}/{path}", json={"accelerators": {"t4": 4}}, timeout=60,
                                 headers={"Authorization": f"token {token}"})
            assert r.status_code == 403, (method, path, r.text)
    finally:
        requests.delete(f"{admin_api}/groups/physics", headers=ops, timeout=60)
    assert _t4_nominal(facility) == "4"


def test_a_used_up_budget_closes_gpu_spawns_and_new_jobs_until_it_is_raised(facility: RunningFacility) -> None:
    """With the facility's own ledger and budget keeper: a zero GPU-hour budget is used up at once."""
    admin_api = f"{facility.url}/services/admin/api"
    ops = {"Authorization": f"token {facility.admin_token}"}

    def bob_state() -> dict[str, Any]:
        states = requests.get(f"{admin_api}/budgets", headers=ops, timeout=60).json()["states"]
        return next((s for s in states if (s["scope"], s["name"]) == ("user", "bob")), {})

    oidc_login(facility.url, "bob")
    token = facility.api("POST", "/users/bob/tokens", json={"note": "budget e2e"}).json()["token"]
    jobs = JobsClient(f"{facility.url}/services/jobs/api", token)
    try:
        r = requests.put(f"{admin_api}/users/bob", headers=ops, timeout=60,
                         json={"budget": {"gpu_hours": 0, "period": "month", "on_exhausted": "hold"}})
        assert r.status_code == 200, r.text
        wait_for(lambda: bob_state().get("level") == "exhausted", 60, message="bob's budget to be used up")
        r = facility.api("POST", "/users/bob/server", json={"profile": "gpu-t4"})
        assert r.status_code == 403 and "The budget of bob is used up" in r.json()["message"], r.text
        with pytest.raises(JobsError, match="new jobs are closed"):
            jobs.submit(["true"], group="physics", with_token=False)
        told = requests.get(f"{facility.url}/services/usage/budgets", headers={"Authorization": f"token {token}"},
                            timeout=60).json()
        assert told["budgets"][0]["level"] == "exhausted", told
    finally:
        requests.delete(f"{admin_api}/users/bob", headers=ops, timeout=60)
    wait_for(lambda: not bob_state(), 60, message="the removed budget to be released")
    events = requests.get(f"{admin_api}/budgets", headers=ops, timeout=60).json()["events"]
    assert events[0]["action"] == "released" and "its budget was removed" in events[0]["message"]
    job = jobs.submit(["true"], group="physics", with_token=False)
    jobs.cancel(job["name"])
