"""Profiles and storage on the whole facility, as the users see them:

* in the browser, alice (physics, ml) is offered the ML profiles with their MIG slices and the free units, bob
  (physics) is not (the MIG spawn itself: test_notebook_session.py);
* from inside bob's notebook, alice's home and the ml group directory are nowhere to be found, neither at their
  mount paths nor at their paths on the host (the state directory is inside the project, which the pods'
  sandboxes see read-only), while alice writes to /shared/groups/ml and reads it back;
* a file in alice's home survives stopping her server and restarting the whole facility (SIGTERM to
  `aifacility up`, then `aifacility up` again on the same state directory and port).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from support.browser import chromium, screenshot
from support.facility import RunningFacility, start_facility
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait, stop_and_wait
from support.ui import login, run_cell, wait

pytestmark = pytest.mark.slow

ML_ONLY = {"gpu-rtx5000", "gpu-a30", "mig-1g-10gb", "mig-3g-40gb"}
CPU = {"profile": "cpu-small", "image": "ml"}
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture(scope="module")
def facility() -> Iterator[RunningFacility]:
    # The state directory inside the project, as `make demo` (`aifacility up`, state in ./.state) has it: the
    # pods' sandboxes see the project read-only, and must still not see the users' volumes stored there.
    OUTPUT.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="e2e-profiles-storage-", dir=OUTPUT))
    fac = start_facility(base)
    yield fac
    code = fac.stop()
    assert code == 0, "".join(fac.output[-40:])
    shutil.rmtree(base, ignore_errors=True)


def user_token(fac: RunningFacility, user: str) -> str:
    r = fac.api("POST", f"/users/{user}/tokens", json={"expires_in": 3600, "note": "e2e"})
    r.raise_for_status()
    return str(r.json()["token"])


def contents(fac: RunningFacility, user: str, token: str, path: str, method: str = "GET",
             **kw: Any) -> requests.Response:
    """The Jupyter contents REST API of the user's server, through the proxy, with the user's own token."""
    return requests.request(method, f"{fac.url}/user/{user}/api/contents/{path}", timeout=30,
                            headers={"Authorization": f"token {token}"}, **kw)


def spawn_form(driver: webdriver.Chrome, fac: RunningFacility, user: str) -> dict[str, str]:
    """Log in, wait for the spawn form; {profile: its text as shown}."""
    login(driver, fac.url, user)
    form = wait(driver, 90).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form#spawn_form")))
    shown = {}
    for label in form.find_elements(By.CSS_SELECTOR, "label.js-profile-label"):
        shown[label.get_attribute("data-profile") or ""] = label.text
    return shown


@pytest.mark.browser
def test_alice_is_offered_the_ml_profiles_with_free_slices_bob_is_not(facility: RunningFacility) -> None:
    alice, bob = chromium(), chromium()
    try:
        shown = spawn_form(alice, facility, "alice")
        assert ML_ONLY <= set(shown), sorted(shown)
        # Nothing runs yet: every MIG slice of the A100 node is free, and the form says so.
        assert re.search(r"A100 MIG 1g\.10gb slice \(10Gi\) —\s*4 of 4 free", shown["mig-1g-10gb"]), \
            shown["mig-1g-10gb"]
        assert "2 of 2 free" in shown["mig-3g-40gb"], shown["mig-3g-40gb"]
        free = alice.find_element(By.CSS_SELECTOR, '[data-accelerator="mig-1g-10gb"] .aif-free')
        assert free.get_attribute("data-free") == "4"
        screenshot(alice, "spawn-form-alice")

        shown = spawn_form(bob, facility, "bob")
        assert not ML_ONLY & set(shown), sorted(shown)
        assert {"cpu-small", "gpu-t4", "fpga-v70"} <= set(shown)
        assert "MIG" not in bob.find_element(By.CSS_SELECTOR, "form#spawn_form").text
        screenshot(bob, "spawn-form-bob")
    finally:
        alice.quit()
        bob.quit()


@pytest.mark.browser
def test_bob_cannot_reach_alices_home_or_the_ml_directory(facility: RunningFacility) -> None:
    volumes = facility.state_dir / "volumes" / "aifacility"
    for user in ("alice", "bob"):
        oidc_login(facility.url, user)
    spawn_and_wait(facility.api, facility.url, "alice", CPU)
    token = user_token(facility, "alice")
    r = contents(facility, "alice", token, "secret.txt", "PUT",
                 json={"type": "file", "format": "text", "content": "alice's private notes"})
    assert r.status_code in (200, 201), r.text
    assert (volumes / "home-alice" / "secret.txt").read_text() == "alice's private notes"

    driver = chromium()
    try:
        # alice, from inside her session: the ml group directory is hers to write and read.
        login(driver, facility.url, "alice")
        driver.get(f"{facility.url}/user/alice/lab")
        out = run_cell(driver, "import pathlib; p = pathlib.Path('/shared/groups/ml/results.txt'); "
                               "p.write_text('ml group result'); print('ML', p.read_text())", expect="ML")
        assert out == "ML ml group result"
        assert (volumes / "group-ml" / "results.txt").read_text() == "ml group result"
        driver.quit()

        driver = chromium()  # bob's own browser
        spawn_and_wait(facility.api, facility.url, "bob", CPU)
        login(driver, facility.url, "bob")
        driver.get(f"{facility.url}/user/bob/lab")
        wait(driver, 120).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LauncherCard")))
        targets = ["/home/alice", "/shared/groups/ml", "/shared/groups/ml/results.txt",
                   str(volumes / "home-alice" / "secret.txt"), str(volumes / "group-ml" / "results.txt"),
                   str(volumes)]
        # The helper's indented lines go through exec: typed ones would get the editor's own indentation too.
        code = ("import json, os\n"
                "exec('def probe(p):\\n    try:\\n        return sorted(os.listdir(p)) if os.path.isdir(p) "
                "else open(p).read()\\n    except OSError as e:\\n        return type(e).__name__')\n"
                f"print('ISOLATION', json.dumps({{'groups': sorted(os.listdir('/shared/groups')), "
                f"'home': os.environ['HOME'], **{{p: probe(p) for p in {targets!r}}}}}))")
        out = run_cell(driver, code, expect="ISOLATION")
        screenshot(driver, "bob-isolation-cell")
    finally:
        driver.quit()
    seen = json.loads(out.removeprefix("ISOLATION "))
    assert seen.pop("groups") == ["physics"]  # only his own group's directory is mounted
    assert seen.pop("home") == "/home/jovyan"
    assert seen == dict.fromkeys(targets, "FileNotFoundError"), seen
    for user in ("alice", "bob"):
        stop_and_wait(facility.api, user)


def test_home_files_survive_a_stop_and_a_restart_of_the_facility(tmp_path: Path) -> None:
    fac = start_facility(tmp_path)
    try:
        oidc_login(fac.url, "alice")
        spawn_and_wait(fac.api, fac.url, "alice", CPU)
        token = user_token(fac, "alice")
        r = contents(fac, "alice", token, "analysis", "PUT", json={"type": "directory"})
        assert r.status_code in (200, 201), r.text
        r = contents(fac, "alice", token, "analysis/run-42.txt", "PUT",
                     json={"type": "file", "format": "text", "content": "signal region: 42 events"})
        assert r.status_code in (200, 201), r.text
        stop_and_wait(fac.api, "alice")
    finally:
        assert fac.stop() == 0, "".join(fac.output[-40:])

    again = RunningFacility(state_dir=fac.state_dir, port=fac.port).start()
    try:
        oidc_login(again.url, "alice")  # a new login after the restart
        spawn_and_wait(again.api, again.url, "alice", CPU)
        r = contents(again, "alice", user_token(again, "alice"), "analysis/run-42.txt")
        assert r.status_code == 200, r.text
        assert r.json()["content"] == "signal region: 42 events"
        stop_and_wait(again.api, "alice")
    finally:
        assert again.stop() == 0, "".join(again.output[-40:])
