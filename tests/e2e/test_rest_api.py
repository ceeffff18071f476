"""The hub's REST API on the running facility: bad requests get messages a person can act on."""

from __future__ import annotations

import pytest

from support.facility import RunningFacility
from support.oidc_login import oidc_login

pytestmark = pytest.mark.slow


def test_unknown_profile_through_rest_is_a_clear_400(facility: RunningFacility) -> None:
    oidc_login(facility.url, "bob")  # a real login, so that bob has IAM tokens to spawn with
    r = facility.api("POST", "/users/bob/server", json={"profile": "gpu-h200"})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "gpu-h200" in message
    assert "Traceback" not in r.text
    assert facility.api("GET", "/users/bob").json()["servers"] == {}


def test_forbidden_profile_through_rest_is_refused(facility: RunningFacility) -> None:
    """bob (physics) does not see the MIG profiles in the form, and the REST API does not let him around it."""
    oidc_login(facility.url, "bob")
    r = facility.api("POST", "/users/bob/server", json={"profile": "mig-1g-10gb"})
    assert r.status_code == 400, r.text
    assert "mig-1g-10gb" in r.json()["message"]
    assert facility.api("GET", "/users/bob").json()["servers"] == {}
