"""A queued session on the whole facility, in the browser: both A100 MIG 3g.40gb slices are busy, alice ticks
'queue' on the spawn form, the pending page shows her place in the ml queue, and her server starts by itself
when one of the sessions holding a slice is stopped through the REST API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client, config
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

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
    fac = start_facility(base, "--demo-users", str(users))
    yield fac
    code = fac.stop()
    assert code == 0, "".join(fac.output[-40:])


def _ready(fac: RunningFacility, user: str) -> bool:
    return bool(fac.api("GET", f"/users/{user}").json()["servers"].get("", {}).get("ready"))


def test_alice_queues_sees_her_position_and_starts_when_a_slice_frees(facility: RunningFacility) -> None:
    for user in HOLDERS:
        oidc_login(facility.url, user)
        r = facility.api("POST", f"/users/{user}/server", json={"profile": PROFILE, "image": "ml"})
        assert r.status_code in (201, 202), r.text
    wait_for(lambda: all(_ready(facility, u) for u in HOLDERS), timeout=120, what="the holders' servers")

    driver = chromium()
    try:
        login(driver, facility.url, "alice")
        form = wait(driver, 90).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form#spawn_form")))
        label = form.find_element(By.CSS_SELECTOR, f'label[data-profile="{PROFILE}"]')
        assert "0 of 2 free" in label.text, label.text  # the form already tells her the slices are busy
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

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(facility.kubeconfig)))
    pod = api.read_namespaced_pod("jupyter-alice", "aifacility")
    assert pod.metadata.labels["kueue.x-k8s.io/queue-name"] == "ml"
    assert not pod.spec.scheduling_gates
    assert pod.spec.node_name == "gpu-a100-01"
    assert pod.spec.containers[0].resources.limits["nvidia.com/mig-3g.40gb"] == "1"
    for user in ("alice", HOLDERS[1]):
        assert facility.api("DELETE", f"/users/{user}/server").status_code in (202, 204)
