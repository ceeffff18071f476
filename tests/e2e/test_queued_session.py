"""A queued session on the whole facility, in the browser: both A100 MIG 3g.40gb slices are busy, alice ticks
'queue' on the spawn form, the pending page shows her place in the ml queue, and her server starts by itself
when one of the sessions holding a slice is stopped through the REST API. Then the same through a hub restart:
the queued session keeps its pod and its place in the queue, and still starts by itself."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from support.browser import chromium, screenshot
from support.facility import RunningFacility, start_facility, wait_for
from support.oidc_login import oidc_login
from support.ui import login, wait

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PROFILE = "mig-3g-40gb"
HOLDERS = ("carol", "dave")  # ml members holding the A100 node's two 3g.40gb slices


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFacility]:
    base = tmp_path_factory.mktemp("queued-session")
    users = base / "users.yaml"
    users.write_text(yaml.safe_dump([{"username": u, "groups": ["ml"]} for u in HOLDERS]))
    # As on a cluster (the chart's default): a hub that stops leaves the sessions to the next hub.
    fac = start_facility(base, "--demo-users", str(users), env={"AIFACILITY_CLEANUP_SERVERS": "0"})
    yield fac
    code = fac.stop()
    assert code == 0, "".join(fac.output[-40:])


def _server(fac: RunningFacility, user: str) -> dict:
    r = fac.api("GET", f"/users/{user}")
    return {} if r.status_code == 404 else r.json()["servers"].get("", {})  # 404: never logged in


def _ready(fac: RunningFacility, user: str) -> bool:
    return bool(_server(fac, user).get("ready"))


def _start_holders(fac: RunningFacility) -> None:
    # A clean slate, even when an earlier test of the module failed half way.
    for user in (*HOLDERS, "alice"):
        if _server(fac, user):
            fac.api("DELETE", f"/users/{user}/server")
    for user in HOLDERS:
        wait_for(lambda u=user: not _server(fac, u), timeout=60, what=f"{user}'s previous server to be gone")
        oidc_login(fac.url, user)
        r = fac.api("POST", f"/users/{user}/server", json={"profile": PROFILE, "image": "ml"})
        assert r.status_code in (201, 202), r.text
    wait_for(lambda: all(_ready(fac, u) for u in HOLDERS), timeout=120, what="the holders' servers")


def test_alice_queues_sees_her_position_and_starts_when_a_slice_frees(facility: RunningFacility) -> None:
    _start_holders(facility)

    driver = chromium()
    try:
        login(driver, facility.url, "alice")

        def busy_form(d: webdriver.Chrome) -> WebElement | None:
            # The free counts are cached for a few seconds (a hint, see availability.py): reload until they
            # show the holders' slices, as a user pressing reload would see them.
            form = wait(d, 90).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form#spawn_form")))
            label = form.find_element(By.CSS_SELECTOR, f'label[data-profile="{PROFILE}"]')
            if "0 of 2 free" in label.text:
                assert "your quota is used up" in label.text, label.text  # ml's two slices are in use
                return form
            d.refresh()
            return None

        form = WebDriverWait(driver, 30, poll_frequency=1).until(busy_form)  # the form tells her the slices are busy
        for selector in (f'input[name="profile"][value="{PROFILE}"]', f"#profile-option-{PROFILE}--queue",
                         "[type=submit]"):
            element = form.find_element(By.CSS_SELECTOR, selector)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element)

        message = wait(driver, 90).until(
            lambda d: (m := d.find_element(By.ID, "progress-message").text).startswith("Queued in") and m)
        screenshot(driver, "spawn-pending-queued")
        assert message.startswith("Queued in the 'ml' queue for 1 x A100 MIG 3g.40gb slice: next in line."), message
        assert "Waiting for:" in message and "mig-3g.40gb" in message, message
        assert not _ready(facility, "alice")

        # A holder stops (through the REST API, as a script or an admin would): alice's session starts by itself.
        assert facility.api("DELETE", f"/users/{HOLDERS[0]}/server").status_code in (202, 204)
        wait(driver, 180).until(lambda d: "/user/alice/lab" in d.current_url)
        wait(driver, 120).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LauncherCard")))
        screenshot(driver, "jupyterlab-after-queue")
    finally:
        driver.quit()

    api = facility.core_api()
    pod = api.read_namespaced_pod("jupyter-alice", "aifacility")
    assert pod.metadata.labels["kueue.x-k8s.io/queue-name"] == "ml"
    assert not pod.spec.scheduling_gates
    assert pod.spec.node_name == "gpu-a100-01"
    assert pod.spec.containers[0].resources.limits["nvidia.com/mig-3g.40gb"] == "1"
    for user in ("alice", HOLDERS[1]):
        assert facility.api("DELETE", f"/users/{user}/server").status_code in (202, 204)


def test_a_queued_session_survives_a_hub_restart_in_its_place(facility: RunningFacility) -> None:
    _start_holders(facility)
    oidc_login(facility.url, "alice")
    wait_for(lambda: not _server(facility, "alice"), timeout=60, what="alice's previous server to be gone")
    r = facility.api("POST", "/users/alice/server", json={"profile": PROFILE, "image": "ml", "queue": True})
    assert r.status_code == 202, r.text
    api = facility.core_api()

    def gated_pod() -> client.V1Pod | None:
        try:
            pod = api.read_namespaced_pod("jupyter-alice", "aifacility")
        except client.ApiException:
            return None
        return pod if pod.spec.scheduling_gates else None

    queued = wait_for(gated_pod, timeout=60, what="alice's pod, held by Kueue")
    assert _server(facility, "alice").get("pending") == "spawn"

    # The hub stops (an upgrade, a crash): `aifacility up` starts it again, as the chart's Deployment would.
    pid = int((facility.state_dir / "hub" / "jupyterhub.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: any("JupyterHub is back" in line for line in facility.output), timeout=180,
             what="the hub to be started again")
    # The running sessions are still there, and the spawn keeper resumes alice's queued one.
    assert all(_ready(facility, u) for u in HOLDERS)
    wait_for(lambda: _server(facility, "alice").get("pending") == "spawn", timeout=60,
             what="the spawn keeper to resume alice's queued session")
    still = gated_pod()
    assert still is not None and still.metadata.uid == queued.metadata.uid  # the same pod: its place is kept

    assert facility.api("DELETE", f"/users/{HOLDERS[0]}/server").status_code in (202, 204)
    wait_for(lambda: _ready(facility, "alice"), timeout=180, what="alice's session to start after the restart")
    pod = api.read_namespaced_pod("jupyter-alice", "aifacility")
    assert pod.metadata.uid == queued.metadata.uid and not pod.spec.scheduling_gates
    assert pod.spec.node_name == "gpu-a100-01"
    keeper_log = (facility.state_dir / "logs" / "hub.log").read_text()
    assert "Resumed the lost spawn of alice (default server)" in keeper_log
    for user in ("alice", HOLDERS[1]):
        assert facility.api("DELETE", f"/users/{user}/server").status_code in (202, 204)
