"""The facility inside JupyterLab (extensions/aifacility_lab), in real Chromium: alice's status bar counts her
GPU session's time down and extends it; from the jobs sidebar she submits the open notebook as a MIG job, sees it
wait with its queue position while another job holds every slice, then run, then its logs, then succeed, with a
notification. bob's sidebar never lists her jobs, and his session's extension refuses her job names.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select

from support.browser import screenshot
from support.facility import RunningFacility, wait_for
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait, stop_and_wait
from support.ui import login, wait

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PROFILES = {"alice": {"profile": "gpu-t4", "image": "ml"}, "bob": {"profile": "cpu-small", "image": "ml"}}
NOTEBOOK = {"cells": [
    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "alpha = 0.1", "outputs": [],
     "execution_count": None},
    {"cell_type": "code", "metadata": {}, "source": "print(f'fitted with alpha={alpha}')", "outputs": [],
     "execution_count": None}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def tokens(facility: RunningFacility) -> Iterator[dict[str, str]]:
    for user, options in PROFILES.items():
        oidc_login(facility.url, user)
        spawn_and_wait(facility.api, facility.url, user, options)
    made = {u: facility.api("POST", f"/users/{u}/tokens", json={"expires_in": 3600, "note": "lab e2e"}).json()[
        "token"] for u in PROFILES}
    yield made
    for user in PROFILES:
        # JupyterLab keeps its layout in the home: the next session would reopen these tabs, not the launcher
        # (the browsers of the tests are closed by now, so nothing saves it again).
        forget = requests.delete(f"{facility.url}/user/{user}/lab/api/workspaces/default", timeout=30,
                                 headers={"Authorization": f"token {made[user]}"})
        assert forget.status_code in (204, 404), forget.text
        stop_and_wait(facility.api, user)


def session_api(facility: RunningFacility, user: str, token: str, method: str, path: str,
                **kw: Any) -> requests.Response:
    """The extension's own API in `user`'s session, with `token` (what the browser's page calls)."""
    return requests.request(method, f"{facility.url}/user/{user}/aifacility/{path}", timeout=60,
                            headers={"Authorization": f"token {token}"}, **kw)


def in_row(driver: Any, name: str, part: str) -> str:
    """The text of one part of a job's row in the sidebar, "" while there is none. One lookup from the page: the
    sidebar re-draws a row when its job changed, so a row found before may be stale when asked for its parts."""
    found = driver.find_elements(By.CSS_SELECTOR, f'li.aifacility-job[data-job="{name}"] .aifacility-job-{part}')
    return str(found[0].text) if found else ""


def click_in_row(w: Any, name: str, button: str) -> None:
    """Click a button of a job's row, finding it again where a poll re-drew the row in between (the wait ignores
    stale elements)."""
    def click(driver: Any) -> bool:
        driver.find_element(By.CSS_SELECTOR, f'li.aifacility-job[data-job="{name}"] button.aifacility-job-{button}'
                            ).click()
        return True
    w.until(click)


@pytest.fixture
def holder(facility: RunningFacility, tokens: dict[str, str]) -> Iterator[requests.Response]:
    """A job of alice's holding every MIG slice of group ml, so that hers has to wait; gone afterwards whatever
    happened (the next tests need the slices)."""
    auth = {"Authorization": f"token {tokens['alice']}"}
    api = f"{facility.url}/services/jobs/api/jobs"
    made = requests.post(api, timeout=60, headers=auth,
                         json={"command": ["sh", "-c", "echo holding; sleep 600"], "group": "ml",
                               "accelerator": {"kind": "mig", "name": "1g.10gb", "count": 4}})
    assert made.status_code == 201, made.text
    yield made
    gone = requests.delete(f"{api}/{made.json()['name']}", timeout=60, headers=auth)
    assert gone.status_code in (204, 404), gone.text


def test_alice_sees_her_time_extends_it_and_follows_a_notebook_job(facility: RunningFacility,
                                                                   tokens: dict[str, str], browser: Any,
                                                                   holder: requests.Response) -> None:
    alice = tokens["alice"]
    put = requests.put(f"{facility.url}/user/alice/api/contents/fit.ipynb", timeout=60,
                       headers={"Authorization": f"token {alice}"},
                       json={"type": "notebook", "format": "json", "content": NOTEBOOK})
    assert put.status_code in (200, 201), put.text
    # her jobs of earlier tests (tests/e2e/test_jobs.py) are in the list too
    earlier = {j["name"] for j in session_api(facility, "alice", alice, "GET", "jobs").json()["jobs"]}

    login(browser, facility.url, "alice")
    browser.get(f"{facility.url}/user/alice/lab/tree/fit.ipynb")
    w = wait(browser, 180)
    left = w.until(lambda d: d.find_element(By.CSS_SELECTOR, "#aifacility-status .aifacility-time-left"))
    w.until(lambda d: re.search(r"\d+:\d\d left", left.text))
    first = left.text
    time.sleep(2.5)
    assert left.text != first, "the countdown moves"
    assert "NVIDIA" in browser.find_element(By.CSS_SELECTOR, "#aifacility-status .aifacility-accelerator").text
    screenshot(browser, "lab-status-bar")

    # Extend from the status bar: the session's end moves by what she asked.
    before = session_api(facility, "alice", alice, "GET", "status").json()["lifetime"]
    browser.find_element(By.ID, "aifacility-status").click()
    hours = w.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "input.aifacility-extend-hours")))
    hours.clear()
    hours.send_keys("0.5")
    browser.find_element(By.XPATH, "//button[contains(@class, 'jp-mod-accept')][.//*[text()='Extend'] or "
                                   "text()='Extend']").click()
    wait_for(lambda: session_api(facility, "alice", alice, "GET", "status").json()["lifetime"]["extended_hours"]
             == pytest.approx(before["extended_hours"] + 0.5), 30, interval=1, what="the extension to be recorded")

    # The jobs sidebar: submit the open notebook as a MIG job of group ml, with a parameter.
    browser.find_element(By.CSS_SELECTOR, '.jp-SideBar [data-id="aifacility-jobs"]').click()
    w.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.aifacility-submit"))).click()
    dialog = w.until(lambda d: d.find_element(By.CSS_SELECTOR, ".jp-Dialog"))
    Select(dialog.find_element(By.NAME, "group")).select_by_value("ml")
    accel = Select(dialog.find_element(By.NAME, "accelerator"))
    accel.select_by_value(next(str(o.get_attribute("value")) for o in accel.options
                               if "1g" in (o.get_attribute("value") or "")))
    dialog.find_element(By.NAME, "parameters").send_keys('{"alpha": 0.5}')
    dialog.find_element(By.XPATH, ".//button[contains(@class, 'jp-mod-accept')]").click()

    def mine() -> str | None:
        jobs = session_api(facility, "alice", alice, "GET", "jobs").json()["jobs"]
        return next((j["name"] for j in jobs if j["kind"] == "notebook" and j["name"] not in earlier), None)

    name = wait_for(mine, 30, interval=1, what="the sidebar's job to exist")
    w.until(lambda d: in_row(d, name, "phase") == "Queued")
    w.until(lambda d: in_row(d, name, "position") == "#1 in queue")
    screenshot(browser, "lab-jobs-sidebar")
    model = session_api(facility, "alice", alice, "GET", f"jobs/{name}").json()
    assert model["request"]["accelerator"]["kind"] == "mig" and model["request"]["parameters"] == {"alpha": 0.5}

    # The holder ends (cancelled from the sidebar): hers runs, then succeeds; its logs show the notebook's
    # output; a notification says so.
    click_in_row(w, holder.json()["name"], "cancel")
    w.until(ec.element_to_be_clickable((By.XPATH, "//div[contains(@class, 'jp-Dialog')]"
                                                  "//button[contains(., 'Cancel job')]"))).click()
    w = wait(browser, 300)
    w.until(lambda d: in_row(d, name, "phase") in ("Starting", "Running", "Succeeded"))
    w.until(lambda d: in_row(d, name, "phase") == "Succeeded")
    click_in_row(w, name, "logs")
    logs = w.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "pre.aifacility-logs")
                                   if "fitted with alpha=0.5" in e.text), None))
    assert logs is not None
    w.until(lambda d: any(f"Job {name} succeeded" in e.text
                          for e in d.find_elements(By.CSS_SELECTOR, ".Toastify__toast, .jp-Notification-Toast")))
    screenshot(browser, "lab-job-logs")


def test_bob_never_sees_alice_s_jobs_and_his_session_refuses_her_job_names(facility: RunningFacility,
                                                                          tokens: dict[str, str],
                                                                          browser: Any) -> None:
    alice, bob = tokens["alice"], tokens["bob"]
    sub = session_api(facility, "alice", alice, "POST", "jobs", json={"command": ["sleep", "30"], "group": "physics"})
    assert sub.status_code == 201, sub.text
    name = sub.json()["name"]

    listed = session_api(facility, "bob", bob, "GET", "jobs")
    assert listed.status_code == 200 and name not in json.dumps(listed.json())
    for method, path in (("GET", f"jobs/{name}"), ("GET", f"jobs/{name}/logs"), ("DELETE", f"jobs/{name}")):
        r = session_api(facility, "bob", bob, method, path)
        assert r.status_code == 403 and r.json()["message"], (method, path, r.text)
    # nor may bob's token reach alice's session and its extension
    assert session_api(facility, "alice", bob, "GET", "jobs").status_code in (403, 404)
    # bad input: a clear message, nothing submitted
    for body, words in (({"notebook": "../../etc/passwd.ipynb"}, "not in your home directory"),
                        ({"command": ["true"], "token": "forged"}, "is not yours to send"),
                        ({"command": "true"}, "Invalid job"), ([1, 2], "JSON object")):
        r = session_api(facility, "bob", bob, "POST", "jobs", json=body)
        assert r.status_code == 400 and words in r.json()["message"], (body, r.text)
    assert session_api(facility, "bob", bob, "GET", "jobs/Not_A_Job").status_code == 400

    login(browser, facility.url, "bob")
    browser.get(f"{facility.url}/user/bob/lab")
    w = wait(browser, 180)
    w.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.jp-SideBar [data-id="aifacility-jobs"]'))[0].click()
    w.until(lambda d: d.find_elements(By.CSS_SELECTOR, "ul.aifacility-job-list"))
    time.sleep(6)  # a poll later
    assert in_row(browser, name, "name") == "", "bob's sidebar lists no job of alice's"
    assert session_api(facility, "alice", alice, "DELETE", f"jobs/{name}").status_code == 204
