"""The usage service against a real JupyterHub: each user sees only their own usage, admins see the facility's
report, everyone else gets 403 there; bad input gets a message."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UsageRecord
from support.hub_process import HubProcess

PERIOD = {"from": "2026-12-01", "to": "2026-12-03"}


def _record(id: str, user: str, group: str, resource: str, **extra: Any) -> UsageRecord:
    return UsageRecord.model_validate({"id": id, "user": user, "group": group, "kind": "notebook",
                                       "resource": resource, "quantity": 2, "start": "2026-12-01T08:00:00Z",
                                       "end": "2026-12-01T11:00:00Z", **extra})


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    work = tmp_path_factory.mktemp("usage-hub")
    db = f"sqlite:///{work / 'ledger.sqlite'}"
    ledger = Ledger(db)
    ledger.ingest([_record("a/cpu", "alice", "physics", "cpu"),
                   _record("a/mig", "alice", "physics", "mig", model="1g.10gb", quantity=1),
                   _record("b/cpu", "bob", "cms", "cpu", quantity=8)])
    ledger.close()
    hub = HubProcess(work)
    hub.launch(textwrap.dedent(f"""
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{"dana"}}
        c.JupyterHub.services = [{{"name": "test", "api_token": "{hub.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "test", "scopes": ["admin:users", "tokens"], "services": ["test"]}}]
        from aifacility.accounting.hubconfig import configure
        configure(c, db_url="{db}")
    """))
    try:
        yield hub
    finally:
        hub.stop()


def _token(hub: HubProcess, user: str) -> str:
    if hub.api("GET", f"/users/{user}").status_code == 404:
        hub.api("POST", f"/users/{user}").raise_for_status()
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "usage test"})
    r.raise_for_status()
    return str(r.json()["token"])


def _get(hub: HubProcess, path: str, user: str, **params: str) -> requests.Response:
    return requests.get(f"{hub.url}/services/usage/{path}", params=params, timeout=60,
                        headers={"Authorization": f"token {_token(hub, user)}"})


def test_each_user_sees_only_their_own_usage(hub: HubProcess) -> None:
    mine = _get(hub, "", "alice", format="json", **PERIOD)
    assert mine.status_code == 200, mine.text
    rows = {r["resource"]: r for r in mine.json()["rows"]}
    assert set(rows) == {"cpu", "mig"} and rows["cpu"]["hours"] == 6.0
    assert rows["mig"]["gpu_equivalent_hours"] == pytest.approx(3 / 7, abs=1e-6)
    theirs = _get(hub, "", "bob", format="csv", **PERIOD)
    assert theirs.status_code == 200 and theirs.text.splitlines()[1:] == [theirs.text.splitlines()[1]]
    assert theirs.text.splitlines()[1].startswith("cpu,core,24.0,")  # bob: 8 cores for 3 h, nothing of alice's
    page = _get(hub, "", "alice", **PERIOD)
    assert page.status_code == 200 and "Usage of alice by resource" in page.text and page.text.count("<svg") == 3
    assert _get(hub, "", "carol", format="json", **PERIOD).json()["rows"] == []


def test_the_facility_report_is_for_admins_only(hub: HubProcess) -> None:
    refused = _get(hub, "admin", "alice", format="json", **PERIOD)
    assert refused.status_code == 403 and "administrators" in refused.json()["message"]
    report = _get(hub, "admin", "dana", format="json", by="user", **PERIOD)
    assert report.status_code == 200, report.text
    assert {(r["user"], r["resource"]) for r in report.json()["rows"]} == {
        ("alice", "cpu"), ("alice", "mig"), ("bob", "cpu")}


def test_bad_input_gets_a_message(hub: HubProcess) -> None:
    for params, needle in [({"from": "yesterday"}, "is not a date"), ({"from": "2026-12-03", "to": "2026-12-01"},
                                                                      "must be after"),
                           ({"format": "pdf"}, "is not one of html, csv, json"), ({"by": "planet"}, "is not one of")]:
        r = _get(hub, "", "alice", **params)
        assert r.status_code == 400 and needle in r.json()["message"], (params, r.text)
    assert requests.get(f"{hub.url}/services/usage/?format=json", timeout=30,
                        allow_redirects=False).status_code in (302, 403)  # not signed in: to the hub's login
