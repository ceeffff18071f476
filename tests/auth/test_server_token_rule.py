"""The IAM token endpoint answers only the API token of a server that runs now: not a personal token made to
look like a server's (its note and scopes copied), and not the token of a server that was stopped or replaced
(what an orphan pod would still hold)."""

from __future__ import annotations

import time

import requests
from auth_harness import LocalHub, login

SERVER_ONLY = "Only the API token of a running notebook server"


def _token_api(hub: LocalHub, token: str) -> requests.Response:
    return requests.get(f"{hub.url}/hub/api/aifacility/token", headers={"Authorization": f"token {token}"},
                        timeout=30)


def _start(hub: LocalHub, user: str) -> str:
    """Start `user`'s default server; the API token the hub gave it."""
    assert hub.api("POST", f"/users/{user}/server").status_code in (201, 202)
    hub.wait_server(user)
    return hub.server_env(user)["JUPYTERHUB_API_TOKEN"]


def _stop(hub: LocalHub, user: str) -> None:
    hub.api("DELETE", f"/users/{user}/server")
    deadline = time.monotonic() + 60
    while hub.api("GET", f"/users/{user}").json().get("servers") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not hub.api("GET", f"/users/{user}").json().get("servers")


def test_a_personal_token_dressed_as_a_server_token_is_refused(hub: LocalHub) -> None:
    login(hub, "dana")
    server_token = _start(hub, "dana")
    try:
        mimic = hub.api("POST", "/users/dana/tokens", json={
            "note": "Server at /user/dana/",
            "scopes": ["access:servers!server=dana/", "users:activity!user=dana", "read:users:name!user=dana"],
        })
        assert mimic.status_code == 201, mimic.text
        model = hub.api("GET", f"/users/dana/tokens/{mimic.json()['id']}").json()
        assert model["note"] == "Server at /user/dana/" and "access:servers!server=dana/" in model["scopes"]
        r = _token_api(hub, mimic.json()["token"])
        assert r.status_code == 403 and SERVER_ONLY in r.json()["message"], r.text
        assert "access_token" not in r.text
        # the real one still works
        assert _token_api(hub, server_token).status_code == 200
    finally:
        _stop(hub, "dana")


def test_the_token_of_a_stopped_or_replaced_server_is_refused_and_revoked(hub: LocalHub) -> None:
    login(hub, "alice")
    first = _start(hub, "alice")
    assert _token_api(hub, first).status_code == 200
    _stop(hub, "alice")
    # stopped: refused here, and no longer a token at all
    r = _token_api(hub, first)
    assert r.status_code == 403 and "access_token" not in r.text
    assert hub.api("GET", "/user", token=first).status_code == 403
    # replaced by a new server: the old token still gets nothing, the new one works
    second = _start(hub, "alice")
    try:
        assert second != first
        assert _token_api(hub, first).status_code == 403
        assert _token_api(hub, second).status_code == 200
    finally:
        _stop(hub, "alice")
    assert _token_api(hub, second).status_code == 403
