"""Events in a real JupyterHub with the admin service: an organiser (a member of `iam.organiser_groups`) creates
an event with 10 join codes, 10 people join at /hub/join and are logged in as temporary accounts of the event's
group; the event's T4s move to the events queue's ClusterQueue; a code used twice is refused; others get 403; bad
input is refused with nothing saved; after the end the temporary accounts are gone (their cookies and codes no
longer work), the T4s are back with physics and the organiser's report lists the 10."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from admin_support import launch_admin_hub

from aifacility.facility import demo_facility_path
from support.controlplane import Cluster, wait_for
from support.hub_process import HubProcess
from support.queues import nominal_quota

EVENTS = "/services/admin/api/events"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Iterator[HubProcess]:
    work = tmp_path_factory.mktemp("events-hub")
    facility = yaml.safe_load(demo_facility_path().read_text())
    facility["iam"]["organiser_groups"] = ["teachers"]
    facility_file = work / "facility.yaml"
    facility_file.write_text(yaml.safe_dump(facility))
    hub = launch_admin_hub(work, cluster, facility_file, AIFACILITY_EVENT_CHECK_SECONDS="1")
    try:
        for user in ("bob", "olga"):
            hub.api("POST", f"/users/{user}").raise_for_status()
        assert hub.api("POST", "/groups/teachers").status_code in (201, 409)  # the organisers' role makes it
        hub.api("POST", "/groups/teachers/users", json={"users": ["olga"]}).raise_for_status()
        wait_for(lambda: requests.get(f"{hub.url}{EVENTS}", timeout=5).status_code == 403, 60,
                 message="the admin service to answer")
        yield hub
    finally:
        hub.stop()


def _call(hub: HubProcess, method: str, path: str, user: str, **kw: Any) -> requests.Response:
    token = hub.api("POST", f"/users/{user}/tokens", json={"note": "events test"}).json()["token"]
    return requests.request(method, f"{hub.url}{EVENTS}{path}", timeout=60,
                            headers={"Authorization": f"token {token}"}, **kw)


def _join(hub: HubProcess, code: str) -> tuple[requests.Session, requests.Response]:
    """A browser's way: the page (its XSRF cookie), then the form."""
    s = requests.Session()
    assert s.get(f"{hub.url}/hub/join", timeout=30).status_code == 200
    r = s.post(f"{hub.url}/hub/join", data={"code": code, "_xsrf": s.cookies.get("_xsrf", "")},
               allow_redirects=False, timeout=60)
    return s, r


def _logged_in_as(hub: HubProcess, s: requests.Session) -> str | None:
    r = s.get(f"{hub.url}/hub/api/user", timeout=30, headers={"Referer": f"{hub.url}/hub/home"})
    return r.json()["name"] if r.status_code == 200 else None


def test_an_organiser_runs_an_event_with_join_codes_from_start_to_report(hub: HubProcess, cluster: Cluster) -> None:
    now = datetime.now(UTC)
    event = {"name": "hack-2027", "title": "ML hackathon", "starts_at": now.isoformat(),
             "ends_at": (now + timedelta(seconds=45)).isoformat(), "participants": {"join_codes": 10},
             "reservation": {"accelerator": "t4", "count": 3}, "profile": {"image": "ml"}}
    assert (nominal_quota(cluster.get("clusterqueue", "physics"), "t4"),
            nominal_quota(cluster.get("clusterqueue", "events"), "t4")) == ("4", "0")
    assert _call(hub, "POST", "", "bob", json=event).status_code == 403  # not an organiser
    r = _call(hub, "POST", "", "olga", json=event)
    assert r.status_code == 201, r.text
    codes = r.json()["join_codes"]
    assert len(codes) == 10 and r.json()["organisers"] == ["olga"] and r.json()["group"] == "event-hack-2027"
    # The reservation is in force at once: the three T4s move from physics (the larger quota) to the events queue.
    assert (nominal_quota(cluster.get("clusterqueue", "physics"), "t4"),
            nominal_quota(cluster.get("clusterqueue", "events"), "t4")) == ("1", "3")

    # Bad input: a clear message each, and nothing saved.
    for bad, needle in [({**event, "name": "school-27"}, "it overlaps 'hack-2027'"),
                        ({**event, "participants": {"join_codes": -3}}, "greater than or equal to 0"),
                        ({**event, "name": "old-school", "starts_at": "2020-01-01T09:00:00Z",
                          "ends_at": "2020-01-02T09:00:00Z"}, "is in the past"),
                        ({**event, "name": "astro-day", "participants": {"groups": ["astro"]}},
                         "unknown groups: astro")]:
        r = _call(hub, "POST", "", "olga", json=bad)
        assert r.status_code == 400 and needle in r.json()["message"], r.text
    assert [e["name"] for e in _call(hub, "GET", "", "olga").json()] == ["hack-2027"]
    assert _call(hub, "GET", "", "bob").status_code == 403
    assert [e["name"] for e in _call(hub, "GET", "", "dana").json()] == ["hack-2027"]  # admins see all

    # Ten people join; each is logged in as a temporary account of the event's group.
    sessions = []
    for code in codes:
        s, r = _join(hub, code)
        assert r.status_code == 302 and r.headers["Location"].endswith("/hub/home"), r.text
        sessions.append(s)
    names = [_logged_in_as(hub, s) for s in sessions]
    assert names == [f"hack-2027-{i:03d}" for i in range(1, 11)]
    group = hub.api("GET", "/groups/event-hack-2027").json()
    assert sorted(group["users"]) == sorted(names)
    _, again = _join(hub, codes[0])
    assert again.status_code == 403 and "used already" in again.text
    _, wrong = _join(hub, "NOPE")
    assert wrong.status_code == 400 and "8 letters and digits" in wrong.text
    # A code whose account name an existing user has never logs into that account.
    (extra,) = _call(hub, "POST", "/hack-2027/codes", "olga", json={"count": 1}).json()["join_codes"]
    hub.api("POST", "/users/hack-2027-011").raise_for_status()
    s, taken = _join(hub, extra)
    assert taken.status_code == 403 and "account name is taken" in taken.text and _logged_in_as(hub, s) is None
    detail = _call(hub, "GET", "/hack-2027", "olga").json()
    assert detail["state"] == "running" and detail["join_codes"] == {"made": 11, "used": 10}
    assert _call(hub, "GET", "/hack-2027", "bob").status_code == 403

    # The end: accounts gone, cookies and codes dead, the report lists the ten.
    ended = wait_for(lambda: (d := _call(hub, "GET", "/hack-2027", "olga").json())["state"] == "ended" and d, 90,
                     message="the event keeper to end the event")
    assert [p["user"] for p in ended["report"]["participants"]] == names
    assert ended["report"]["totals"]["participants"] == 10
    assert [h["action"] for h in ended["log"]][-1] == "ended"
    assert hub.api("GET", f"/users/{names[0]}").status_code == 404
    assert hub.api("GET", "/users/hack-2027-011").status_code == 200  # not the event's: kept
    assert _logged_in_as(hub, sessions[1]) is None
    _, late = _join(hub, codes[0])
    assert late.status_code == 403 and "is over" in late.text
    assert (nominal_quota(cluster.get("clusterqueue", "physics"), "t4"),
            nominal_quota(cluster.get("clusterqueue", "events"), "t4")) == ("4", "0")  # given back at the end


def test_the_cli_creates_lists_and_refuses_events_with_the_organiser_s_token(hub: HubProcess, tmp_path: Path) -> None:
    import subprocess
    import sys

    token = hub.api("POST", "/users/olga/tokens", json={"note": "cli"}).json()["token"]
    env = {**os.environ, "AIFACILITY_HUB_URL": hub.url, "JUPYTERHUB_API_TOKEN": token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aifacility.cli", "admin", "event", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    start = datetime.now(UTC) + timedelta(days=30)
    spec = tmp_path / "school.yaml"
    spec.write_text(yaml.safe_dump({"name": "school-cli", "title": "A school", "starts_at": start,
                                    "ends_at": start + timedelta(days=2), "participants": {"join_codes": 3}}))
    made = cli("create", str(spec))
    assert made.returncode == 0, made.stderr
    assert "event school-cli created" in made.stdout and len([ln for ln in made.stdout.splitlines()
                                                             if ln.startswith("  ")]) == 3
    assert "school-cli" in cli("list").stdout
    assert cli("codes", "school-cli", "2").stdout.count("-") == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    refused = cli("create", str(bad))
    assert refused.returncode == 1 and "is not YAML" in refused.stderr and "Traceback" not in refused.stderr
    naive = tmp_path / "naive.yaml"
    naive.write_text(spec.read_text().replace("school-cli", "naive-cli").replace("+00:00", ""))
    refused = cli("create", str(naive))
    assert refused.returncode == 1 and "give a time zone" in refused.stderr, refused.stderr
    assert cli("cancel", "school-cli").stdout.strip() == "event school-cli: cancelled"
    assert "cancelled" in cli("show", "school-cli").stdout
