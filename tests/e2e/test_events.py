"""An event on the whole facility: dana (an admin) creates a hackathon with 10 join codes that reserves all four
A100 MIG 1g.10gb slices, with the ml image and teaching material. Ten people join at /hub/join (the first in
Chromium); a participant starts the event's profile and gets a reserved slice through the events queue, while
alice's (ml, not a participant) queued request for such a slice waits; the material is pulled into the home with
nbgitpuller, and the participant's edit survives a later pull of an upstream change. At the end the sessions stop,
the temporary accounts can no longer log in, the slices go back to ml (alice's session starts) and the
organiser's report lists the ten."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from aifacility.embedded.controlplane import build
from support.browser import screenshot
from support.controlplane import wait_for
from support.facility import RunningFacility
from support.oidc_login import oidc_login
from support.queues import nominal_quota
from support.ui import wait

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SLICE = "mig-1g-10gb"
EVENT = "hack-e2e"


@pytest.fixture
def material() -> Iterator[Path]:
    """The organiser's repository, where sessions can read it: the node agent's pods see /var read-only."""
    root = Path(tempfile.mkdtemp(prefix="aifacility-e2e-material-", dir="/var/tmp"))
    root.chmod(0o755)
    repo = root / "hack-material"
    repo.mkdir()
    (repo / "lesson1.py").write_text("print('lesson 1')\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "day 1")
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield repo
    shutil.rmtree(root, ignore_errors=True)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=organiser", "-c", "user.email=o@example.org", *args], cwd=repo,
                   check=True, capture_output=True, timeout=60)


def _cq(facility: RunningFacility, name: str) -> dict[str, Any]:
    out = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={facility.kubeconfig}", "get", "clusterqueue",
                          name, "-o", "json"], capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(json.loads(out))


def _prepuller(facility: RunningFacility) -> dict[str, Any] | None:
    proc = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={facility.kubeconfig}", "-n", "aifacility",
                           "get", "daemonset", f"event-prepull-{EVENT}", "-o", "json"], capture_output=True, text=True,
                          timeout=60)
    return dict(json.loads(proc.stdout)) if proc.returncode == 0 else None


def _server(facility: RunningFacility, user: str) -> dict[str, Any]:
    r = facility.api("GET", f"/users/{user}")
    return {} if r.status_code == 404 else dict(r.json()["servers"].get("", {}))


def _join(facility: RunningFacility, code: str) -> requests.Session:
    s = requests.Session()
    s.get(f"{facility.url}/hub/join", timeout=30)
    r = s.post(f"{facility.url}/hub/join", data={"code": code, "_xsrf": s.cookies.get("_xsrf", "")},
               allow_redirects=False, timeout=60)
    assert r.status_code == 302, r.text
    return s


def _me(facility: RunningFacility, s: requests.Session) -> str | None:
    r = s.get(f"{facility.url}/hub/api/user", timeout=30, headers={"Referer": f"{facility.url}/hub/home"})
    return r.json()["name"] if r.status_code == 200 else None


def _pull(facility: RunningFacility, user: str, token: str, repo: Path) -> None:
    """What the profile's start page does in the browser: nbgitpuller's pull, to its end."""
    r = requests.get(f"{facility.url}/user/{user}/git-pull/api", timeout=180, stream=True,
                     params={"repo": f"file://{repo}", "branch": "main", "targetpath": repo.name},
                     headers={"Authorization": f"token {token}"})
    assert r.status_code == 200, r.text
    assert '"phase": "finished"' in r.text and '"phase": "error"' not in r.text, r.text[-2000:]


def _file(facility: RunningFacility, user: str, token: str, path: str) -> str | None:
    r = requests.get(f"{facility.url}/user/{user}/api/contents/{path}", params={"content": "1", "format": "text"},
                     headers={"Authorization": f"token {token}"}, timeout=60)
    return r.json()["content"] if r.status_code == 200 else None


def test_a_hackathon_with_join_codes_a_reserved_slice_and_material(
        facility: RunningFacility, browser: webdriver.Chrome, material: Path) -> None:
    admin = {"Authorization": f"token {facility.admin_token}"}
    events = f"{facility.url}/services/admin/api/events"
    assert nominal_quota(_cq(facility, "ml"), SLICE) == "4"
    now = datetime.now(UTC)
    body = {"name": EVENT, "title": "MIG hackathon", "starts_at": now.isoformat(),
            "ends_at": (now + timedelta(seconds=240)).isoformat(), "participants": {"join_codes": 10},
            "reservation": {"accelerator": SLICE, "count": 4},
            "profile": {"image": "ml", "cpu": "1", "memory": "2Gi"},
            "material": {"repo": f"file://{material}", "branch": "main"}}
    r = requests.post(events, json=body, headers=admin, timeout=60)
    assert r.status_code == 201, r.text
    codes = r.json()["join_codes"]
    try:
        # The reservation is in force at once: ml lends the four slices to the events queue, which lends none.
        assert nominal_quota(_cq(facility, "events"), SLICE) == "4"
        assert nominal_quota(_cq(facility, "ml"), SLICE) == "0"
        # The image is pre-pulled on the A100 node, the one with these slices.
        ds = wait_for(lambda: (d := _prepuller(facility)) and d.get("status", {}).get("desiredNumberScheduled") and d,
                      60, message="the event's pre-puller")
        assert ds["status"]["desiredNumberScheduled"] == 1
        assert ds["spec"]["template"]["spec"]["containers"][0]["image"].endswith("notebook-ml:2026.11")

        # The first participant joins in the browser; nine more with the same form's request.
        browser.get(f"{facility.url}/hub/join")
        box = wait(browser).until(ec.presence_of_element_located((By.ID, "aifacility-join-code")))
        screenshot(browser, "event-join")
        box.send_keys(codes[0])
        browser.find_element(By.ID, "aifacility-join-submit").click()
        wait(browser).until(lambda d: "/hub/home" in d.current_url or "/hub/spawn" in d.current_url)
        browser.get(f"{facility.url}/hub/spawn")
        wait(browser).until(lambda d: "MIG hackathon (event)" in d.page_source)
        screenshot(browser, "event-spawn-form")
        sessions = [_join(facility, c) for c in codes[1:]]
        names = [f"{EVENT}-{i:03d}" for i in range(1, 11)]
        assert [_me(facility, s) for s in sessions] == names[1:]

        # alice (ml) asks for a slice: she waits, the slices are the event's.
        oidc_login(facility.url, "alice")
        r = facility.api("POST", "/users/alice/server", json={"profile": SLICE, "image": "ml", "queue": True})
        assert r.status_code == 202, r.text

        # A participant starts the event's profile and gets a reserved slice through the events queue.
        first = names[0]
        r = facility.api("POST", f"/users/{first}/server", json={"profile": f"event-{EVENT}", "image": "ml"})
        assert r.status_code in (201, 202), r.text
        wait_for(lambda: _server(facility, first).get("ready"), 180, message=f"{first}'s session")
        pod = facility.core_api().read_namespaced_pod(f"jupyter-{first}", "aifacility")
        assert pod.metadata.labels["kueue.x-k8s.io/queue-name"] == "events"
        assert pod.spec.containers[0].resources.limits["nvidia.com/mig-1g.10gb"] == "1"
        assert _server(facility, "alice").get("pending") == "spawn"  # still waiting

        # The material: pulled into the home; the participant's edit survives the organiser's next change.
        token = facility.api("POST", f"/users/{first}/tokens", json={"note": "events e2e"}).json()["token"]
        _pull(facility, first, token, material)
        assert _file(facility, first, token, "hack-material/lesson1.py") == "print('lesson 1')\n"
        r = requests.put(f"{facility.url}/user/{first}/api/contents/hack-material/lesson1.py", timeout=60,
                         headers={"Authorization": f"token {token}"},
                         json={"type": "file", "format": "text", "content": "print('my answer')\n"})
        assert r.status_code == 200, r.text
        (material / "lesson2.py").write_text("print('lesson 2')\n")
        _git(material, "add", ".")
        _git(material, "commit", "-q", "-m", "day 2")
        _pull(facility, first, token, material)
        assert _file(facility, first, token, "hack-material/lesson1.py") == "print('my answer')\n"
        assert _file(facility, first, token, "hack-material/lesson2.py") == "print('lesson 2')\n"
    finally:
        # The end (the event's own window; nothing can end it earlier): sessions stopped, accounts gone, the
        # slices back with ml, the report made.
        ended = wait_for(lambda: (d := requests.get(f"{events}/{EVENT}", headers=admin, timeout=60).json())
                         .get("state") == "ended" and d, 400, message="the event's end")
    assert [p["user"] for p in ended["report"]["participants"]] == names
    assert facility.api("GET", f"/users/{first}").status_code == 404
    assert _me(facility, sessions[0]) is None
    assert nominal_quota(_cq(facility, "ml"), SLICE) == "4"
    assert nominal_quota(_cq(facility, "events"), SLICE) == "0"
    assert _prepuller(facility) is None
    wait_for(lambda: _server(facility, "alice").get("ready"), 180, message="alice's session, once the slices are back")
    s = requests.Session()
    s.get(f"{facility.url}/hub/join", timeout=30)
    late = s.post(f"{facility.url}/hub/join", data={"code": codes[3], "_xsrf": s.cookies.get("_xsrf", "")},
                  timeout=60)
    assert late.status_code == 403 and "is over" in late.text
    assert facility.api("DELETE", "/users/alice/server").status_code in (202, 204)
