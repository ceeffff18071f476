"""The hub's REST API on the running facility: bad requests get messages a person can act on."""

from __future__ import annotations

import pytest

from support.facility import RunningFacility

pytestmark = pytest.mark.slow


def test_unknown_profile_through_rest_is_a_clear_400(facility: RunningFacility) -> None:
    facility.api("POST", "/users/carol")
    r = facility.api("POST", "/users/carol/server", json={"profile": "gpu-h200"})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "gpu-h200" in message
    assert "Traceback" not in r.text
    assert facility.api("GET", "/users/carol").json()["servers"] == {}
