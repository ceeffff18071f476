"""Against a real JupyterHub: the REST API (ownership, cap, bad input), warnings then enforcement of the
lifetime, idle culling of accelerator sessions, and the countdown with its Extend button on the hub pages."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests
from lifetimes_harness import LifetimesHub, start_hub, wait_for

from aifacility.lifetimes.policy import parse_time
from aifacility.lifetimes.store import ExtensionStore


def browser(hub: LifetimesHub, user: str) -> requests.Session:
    """A signed-in browser session (DummyAuthenticator: any password)."""
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30).raise_for_status()
    # next=home: the default redirect after login would start a server (without a profile)
    r = s.post(f"{hub.url}/hub/login?next=%2Fhub%2Fhome",
               data={"username": user, "password": "x", "_xsrf": s.cookies["_xsrf"]}, timeout=30)
    r.raise_for_status()
    return s


def test_owner_reads_and_extends_up_to_the_cap_and_nobody_else_can(hub: LifetimesHub) -> None:
    bob, alice, admin = hub.user_token("bob"), hub.user_token("alice"), hub.user_token("admin")
    hub.start_server("bob", "short")

    r = hub.lifetimes("GET", "/users/bob/server", token=bob)
    assert r.status_code == 200, r.text
    before = r.json()
    assert before["profile"] == "short" and before["stop_reason"] == "lifetime"
    assert 0 < before["remaining_seconds"] <= 0.006 * 3600

    r = hub.lifetimes("POST", "/users/bob/server/extend", token=bob, json={"hours": 0.005})
    assert r.status_code == 200, r.text
    after = r.json()
    moved = parse_time(after["deadline"]) - parse_time(before["deadline"])  # type: ignore[operator]
    assert moved.total_seconds() == pytest.approx(18, abs=0.01)
    # on disk before the answer: another process (the culler, a restarted service) sees it
    stored = ExtensionStore(hub.workdir / "data" / "lifetimes.sqlite")
    assert stored.extended("bob", "", parse_time(after["spawned"])).total_seconds() == pytest.approx(18)  # type: ignore[arg-type]

    # above the cap: a 400 that says the cap and when the session ends
    r = hub.lifetimes("POST", "/users/bob/server/extend", token=bob, json={"hours": 0.01})
    assert r.status_code == 400
    msg = r.json()["message"]
    assert "at most 0.012 h after their start" in msg and "this session ends at" in msg
    assert after["deadline"][:19].replace("T", " ") in msg

    # bad input: clear 400s, never a 500
    for body, expect in [(b"not json", "must be JSON"), (b"[1]", '"hours"'), (b"{}", '"hours"'),
                         (b'{"hours": "two"}', "number of hours"), (b'{"hours": -1}', "positive"),
                         (b'{"hours": 1, "why": 1}', "Unknown field"), (b'{"hours": 1, "%s%d": 1}', "%s%d")]:
        r = hub.lifetimes("POST", "/users/bob/server/extend", token=bob, data=body)
        assert r.status_code == 400 and expect in r.json()["message"], (body, r.text)
    assert hub.lifetimes("GET", "/users/bob/servers/nope", token=bob).status_code == 404
    r = hub.lifetimes("GET", "/users/b%25s%25d/server", token=bob)  # user input in a message is not a format
    assert r.status_code == 404 and "b%s%d has no running" in r.json()["message"]

    # another user can neither read nor extend bob's server; the answer does not say it exists
    for method, path in [("GET", "/users/bob/server"), ("POST", "/users/bob/server/extend"), ("GET", "/users/bob")]:
        r = hub.lifetimes(method, path, token=alice, json={"hours": 0.001})
        assert r.status_code in (403, 404), r.text
    assert hub.lifetimes("GET", "/users/bob/server", token=alice).json()["status"] == 404
    # no credentials at all
    assert requests.get(f"{hub.url}/services/lifetimes/api/users/bob/server", timeout=30).status_code == 403
    # an admin can read and extend anyone's
    r = hub.lifetimes("GET", "/users/bob", token=admin)
    assert r.status_code == 200 and [s["server"] for s in r.json()["servers"]] == [""]
    r = hub.lifetimes("POST", "/users/bob/server/extend", token=admin, json={"hours": 0.0009})
    assert r.status_code == 200, r.text
    hub.api("DELETE", "/users/bob/server")


def test_session_is_warned_then_stopped_at_its_deadline(hub: LifetimesHub) -> None:
    carol = hub.user_token("carol")
    page = browser(hub, "carol")
    hub.start_server("carol", "short")

    def warned() -> dict[str, object] | None:
        body = hub.lifetimes("GET", "/users/carol/server", token=carol).json()
        return body if body.get("warning") else None

    warning = wait_for(warned, 30, "the warning")
    assert warning["remaining_seconds"] > 0 and "ends at" in warning["message"]
    assert hub.server("carol"), "warned, and still running"
    # the hub's home page shows it too, with an Extend button leading to the service
    home = page.get(f"{hub.url}/hub/home", timeout=30).text
    assert re.search(r'class="alert alert-warning aifacility-session"', home), home[:3000]
    assert 'href="/services/lifetimes/"' in home and "This session ends at" in home

    wait_for(lambda: hub.server("carol") is None, 40, "the culler to stop carol's server")
    stopped_seen = time.time()
    assert hub.lifetimes("GET", "/users/carol/server", token=carol).status_code == 404
    deadline = parse_time(warning["deadline"])
    assert deadline is not None and deadline.timestamp() <= stopped_seen
    assert "lifetime of profile short ended" in hub.log()


def test_idle_accelerator_session_is_culled_and_cpu_session_is_not(hub: LifetimesHub) -> None:
    erin = hub.user_token("erin")
    hub.start_server("frank", "cpu")
    hub.start_server("erin", "gpu")
    state = hub.lifetimes("GET", "/users/erin/server", token=erin).json()
    assert state["stop_reason"] == "idle" and state["idle_timeout_seconds"] == 9
    assert state["warning"] is True and "idle" in state["message"]  # warned from the start: 12 s > 9 s

    wait_for(lambda: hub.server("erin") is None, 40, "the culler to stop erin's idle GPU server")
    assert "erin/: idle since" in hub.log()
    assert hub.server("frank"), "an idle CPU session is not culled"
    hub.api("DELETE", "/users/frank/server")


def test_extend_button_leads_to_a_form_that_extends(hub: LifetimesHub) -> None:
    page = browser(hub, "gina")
    hub.start_server("gina", "cpu")
    home = page.get(f"{hub.url}/hub/home", timeout=30).text
    assert 'class="alert alert-info aifacility-session"' in home  # an hour left: no warning yet

    form = page.get(f"{hub.url}/services/lifetimes/", timeout=30)  # OAuth with the hub, no consent page
    assert form.status_code == 200 and "Default server" in form.text, form.text[:2000]
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    assert xsrf, form.text
    r = page.post(f"{hub.url}/services/lifetimes/extend", data={"server": "", "hours": "0.01",
                                                                 "_xsrf": xsrf.group(1)}, timeout=30)
    assert r.status_code == 200 and "Extended: the session now ends at" in r.text, r.text[:2000]
    r = page.post(f"{hub.url}/services/lifetimes/extend", data={"server": "", "hours": "lots",
                                                                 "_xsrf": xsrf.group(1)}, timeout=30)
    assert r.status_code == 400 and "number of hours" in r.text
    # without the form's xsrf token the cookie does not authenticate a POST
    assert page.post(f"{hub.url}/services/lifetimes/extend", data={"hours": "0.01"},
                     allow_redirects=False, timeout=30).status_code in (302, 403)

    # inside the session: what the JupyterLab extension's status bar shows, served by the session itself
    r = requests.get(f"{hub.url}/user/gina/aifacility/status", timeout=30,
                     headers={"Authorization": f"token {hub.user_token('gina')}"})
    assert r.status_code == 200, r.text
    lifetime = r.json()["lifetime"]
    assert lifetime["message"].startswith("This session ends at"), r.text
    assert lifetime["remaining_seconds"] > 0 and r.json()["lifetime_error"] is None
    # ... and its Extend: with the session's own token, within the profile's cap, bad input refused
    auth = {"Authorization": f"token {hub.user_token('gina')}"}
    r = requests.post(f"{hub.url}/user/gina/aifacility/extend", json={"hours": 0.01}, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["extended_hours"] > lifetime["extended_hours"], r.text
    r = requests.post(f"{hub.url}/user/gina/aifacility/extend", json={"hours": "lots"}, headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["message"] == '"hours" must be a number, e.g. {"hours": 1}.'
    r = requests.post(f"{hub.url}/user/gina/aifacility/extend", json={"hours": 1000}, headers=auth, timeout=30)
    assert r.status_code == 400 and "at most" in r.json()["message"], r.text
    hub.api("DELETE", "/users/gina/server")


def test_hub_data_holds_the_store_and_the_enforced_facility(hub: LifetimesHub) -> None:
    data = Path(hub.workdir / "data")
    assert (data / "lifetimes.sqlite").exists() and (data / "lifetimes-facility.json").exists()


def test_extension_survives_a_hub_restart(tmp_path: Path) -> None:
    hub = start_hub(tmp_path)
    try:
        token = hub.user_token("hana")
        hub.start_server("hana", "cpu")
        r = hub.lifetimes("POST", "/users/hana/server/extend", token=token, json={"hours": 0.01})
        assert r.status_code == 200, r.text
        extended = r.json()
        hub.stop(servers=False)  # the hub and its services go; hana's server keeps running
        hub = start_hub(tmp_path, token=hub.token)
        again = hub.lifetimes("GET", "/users/hana/server", token=token).json()
        assert again["started"] == extended["started"] and again["deadline"] == extended["deadline"]
        assert again["extended_hours"] == pytest.approx(0.01)
    finally:
        hub.stop()
