"""The IAM login on a real JupyterHub: groups, admin, refusals, OAuth state checks, and the session token API."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests
from auth_harness import TOKEN_MIN_LIFETIME, LocalHub, login, provider_login_page, submit_login

from aifacility.oidc import EmbeddedOIDCProvider

pytestmark = pytest.mark.slow


def _groups(hub: LocalHub, name: str) -> list[str]:
    return sorted(hub.api("GET", f"/users/{name}").json()["groups"])


def test_alice_logs_in_with_her_iam_groups(hub: LocalHub) -> None:
    _, resp = login(hub, "alice")
    assert resp.status_code == 200 and urlparse(resp.url).path == "/hub/spawn"
    user = hub.api("GET", "/users/alice").json()
    assert sorted(user["groups"]) == ["ml", "physics"]
    assert user["admin"] is False
    assert user["auth_state"]["refresh_token"]


def test_dana_of_the_admins_group_is_hub_admin(hub: LocalHub) -> None:
    login(hub, "dana")
    user = hub.api("GET", "/users/dana").json()
    assert user["admin"] is True and user["groups"] == ["admins"]


def test_eve_outside_the_facility_groups_is_refused_with_a_reason(hub: LocalHub) -> None:
    _, resp = login(hub, "eve")
    assert resp.status_code == 403
    assert "not a member of any group" in resp.text
    assert "Groups with access: <b>admins, ml, physics</b>" in resp.text
    assert "aifacility-support@example.org" in resp.text
    assert hub.api("GET", "/users/eve").status_code == 404


def test_a_second_iam_account_with_the_same_username_is_refused(hub: LocalHub) -> None:
    login(hub, "alice")
    sub = hub.api("GET", "/users/alice").json()["auth_state"]["oauth_user"]["sub"]
    _, resp = login(hub, "Alice")
    assert resp.status_code == 403
    assert "already belongs to another IAM account" in resp.text
    assert hub.api("GET", "/users/alice").json()["auth_state"]["oauth_user"]["sub"] == sub


def test_an_iam_name_without_letters_or_digits_is_refused(hub: LocalHub) -> None:
    _, resp = login(hub, "___")
    assert resp.status_code == 403
    assert "cannot be given a facility username" in resp.text and "no letters or digits" in resp.text


def test_forged_state_is_refused(hub: LocalHub) -> None:
    session = requests.Session()
    callback = submit_login(session, provider_login_page(session, hub), "bob")
    query = parse_qs(urlparse(callback).query)
    query["state"] = ["eyJzdGF0ZV9pZCI6ICJmb3JnZWQifQ"]  # {"state_id": "forged"}
    resp = session.get(f"{hub.callback_url}?{urlencode(query, doseq=True)}", timeout=30)
    assert resp.status_code == 400
    assert "does not match the login started in this browser" in resp.text
    assert session.get(f"{hub.url}/hub/api/user", timeout=10).status_code == 403


def test_replayed_callback_is_refused(hub: LocalHub) -> None:
    session = requests.Session()
    callback = submit_login(session, provider_login_page(session, hub), "bob")
    assert session.get(callback, timeout=30).status_code == 200
    again = session.get(callback, timeout=30)
    assert again.status_code == 400 and "it was already used" in again.text
    # The same response carried to another browser fails too.
    elsewhere = requests.get(callback, timeout=30)
    assert elsewhere.status_code == 400 and "not belong to a login started in this browser" in elsewhere.text


@pytest.fixture
def bob_server(hub: LocalHub) -> Iterator[dict[str, str]]:
    login(hub, "bob")
    assert hub.api("POST", "/users/bob/server").status_code in (201, 202)
    hub.wait_server("bob")
    deadline = time.monotonic() + 30  # the session's extension fetches the token once the server is up
    while not hub.token_file("bob").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    yield hub.server_env("bob")
    hub.api("DELETE", "/users/bob/server")


def _token_api(hub: LocalHub, token: str | None, **params: str) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(f"{hub.url}/hub/api/aifacility/token", headers=headers, params=params, timeout=30)


def test_server_gets_its_owners_fresh_token(hub: LocalHub, provider: EmbeddedOIDCProvider,
                                            bob_server: dict[str, str]) -> None:
    resp = _token_api(hub, bob_server["JUPYTERHUB_API_TOKEN"])
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["user"] == "bob" and body["expires_at"] > time.time()
    me = requests.get(f"{provider.issuer}/me", headers={"Authorization": f"Bearer {body['access_token']}"},
                      timeout=10)
    assert me.status_code == 200 and me.json()["preferred_username"] == "bob"


def test_session_has_a_private_token_file_and_no_token_in_its_spec(hub: LocalHub,
                                                                   bob_server: dict[str, str]) -> None:
    path = hub.token_file("bob")
    assert bob_server["AIFACILITY_TOKEN_FILE"] == bob_server["BEARER_TOKEN_FILE"] == str(path)
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = path.read_text().strip()
    state = hub.api("GET", "/users/bob").json()["auth_state"]
    assert token == state["access_token"]
    # What the spawner put in the process environment (a pod spec's env) holds no IAM token.
    assert not any(token in v or state["refresh_token"] in v for v in bob_server.values())


def test_a_server_cannot_read_another_users_token(hub: LocalHub, bob_server: dict[str, str]) -> None:
    resp = _token_api(hub, bob_server["JUPYTERHUB_API_TOKEN"], user="alice")
    assert resp.status_code == 403
    assert resp.json()["message"] == ("A server may read only its own user's token: this is bob's server, "
                                      "and it asked for alice's.")
    assert "access_token" not in resp.text


def test_personal_tokens_cookies_and_services_cannot_read_tokens(hub: LocalHub, bob_server: dict[str, str]) -> None:
    personal = hub.api("POST", "/users/bob/tokens", json={"note": "mine"}).json()["token"]
    resp = _token_api(hub, personal)
    assert resp.status_code == 403 and "personal API tokens" in resp.json()["message"]
    assert _token_api(hub, None).status_code == 403
    service = _token_api(hub, hub.service_token)
    assert service.status_code == 403 and "access_token" not in service.text
    browser, _ = login(hub, "bob")
    assert browser.get(f"{hub.url}/hub/api/aifacility/token", timeout=30).status_code == 403


def test_the_jobs_service_scope_reads_any_users_fresh_token(hub: LocalHub, provider: EmbeddedOIDCProvider) -> None:
    """What the jobs service does for running jobs: a service holding custom:iam-tokens:read names the user; bob
    needs no running server. Other services are refused (above), and a user must be named and exist."""
    login(hub, "bob")
    resp = _token_api(hub, hub.reader_token, user="bob")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store", resp.text
    body = resp.json()
    assert body["user"] == "bob" and body["expires_at"] > time.time() and _valid(provider, body["access_token"])
    missing = _token_api(hub, hub.reader_token)
    assert missing.status_code == 404 and "?user=NAME" in missing.json()["message"]
    assert _token_api(hub, hub.reader_token, user="nobody-here").status_code == 404
    other = _token_api(hub, hub.service_token, user="bob")
    assert other.status_code == 403 and "custom:iam-tokens:read" in other.json()["message"]


def test_concurrent_renewals_share_one_refresh(hub: LocalHub, provider: EmbeddedOIDCProvider,
                                               bob_server: dict[str, str]) -> None:
    """IAM rotates refresh tokens and revokes the grant if a spent one is shown: racing renewals must not."""
    from concurrent.futures import ThreadPoolExecutor

    token = bob_server["JUPYTERHUB_API_TOKEN"]
    expires_at = _token_api(hub, token).json()["expires_at"]
    time.sleep(max(0.0, expires_at - TOKEN_MIN_LIFETIME + 1 - time.time()))  # now inside the renewal margin
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _token_api(hub, token), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    fresh = {a.json()["access_token"] for a in answers}
    assert len(fresh) == 1
    assert _valid(provider, fresh.pop())
    # The grant is intact: the refresh token the hub keeps is still active at the provider.
    state = hub.api("GET", "/users/bob").json()["auth_state"]
    check = requests.post(f"{provider.issuer}/token/introspection", timeout=10, data={
        "token": state["refresh_token"], "client_id": provider.client_id, "client_secret": provider.client_secret})
    assert check.json()["active"] is True, check.text


def _valid(provider: EmbeddedOIDCProvider, access_token: str) -> bool:
    me = requests.get(f"{provider.issuer}/me", headers={"Authorization": f"Bearer {access_token}"}, timeout=10)
    return me.status_code == 200


async def _run_in_kernel(hub: LocalHub, user: str, token: str, code: str) -> str:
    """Start a kernel in the user's server (through the proxy, as JupyterLab does) and return its stdout."""
    import uuid

    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    base = f"{hub.url}/user/{user}/api/kernels"
    headers = {"Authorization": f"token {token}"}
    http = AsyncHTTPClient()
    resp = await http.fetch(base, method="POST", headers=headers, body=json.dumps({"name": "python3"}),
                            request_timeout=60)
    kernel = json.loads(resp.body)
    try:
        ws = await websocket_connect(HTTPRequest(f"{base.replace('http', 'ws', 1)}/{kernel['id']}/channels",
                                                 headers=headers))
        msg_id = uuid.uuid4().hex
        await ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user, "session": msg_id,
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False}}))
        out = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            raw = await ws.read_message()
            if raw is None:
                break
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out += msg["content"]["text"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        ws.close()
        return out
    finally:
        await http.fetch(f"{base}/{kernel['id']}", method="DELETE", headers=headers, request_timeout=30)


async def test_kernels_see_the_token_in_access_token(hub: LocalHub, bob_server: dict[str, str]) -> None:
    out = await _run_in_kernel(hub, "bob", bob_server["JUPYTERHUB_API_TOKEN"], (
        "import os\n"
        "tok = open(os.environ['BEARER_TOKEN_FILE']).read().strip()\n"
        "print('SAME' if os.environ.get('ACCESS_TOKEN') == tok and tok else 'DIFFERENT')\n"))
    assert out.strip() == "SAME"


def test_no_token_reaches_a_log(hub: LocalHub, provider: EmbeddedOIDCProvider) -> None:
    """Runs last in this module: every login, refresh, spawn and refusal above has been logged by then."""
    login(hub, "alice")
    secrets: set[str] = set()
    # The provider's snapshot and the journal of changes since it
    keys = set(json.loads((provider.state_dir / "store.json").read_text()))
    journal = provider.state_dir / "store.journal"
    keys |= {json.loads(line)["k"] for line in journal.read_text().splitlines() if line}
    for key in keys:
        kind, _, ident = key.partition(":")
        if kind in ("AccessToken", "RefreshToken", "AuthorizationCode"):
            secrets.add(ident)
    for name in ("alice", "bob", "dana"):
        state = hub.api("GET", f"/users/{name}").json().get("auth_state") or {}
        secrets |= {state.get("access_token") or "", state.get("refresh_token") or "", state.get("id_token") or ""}
        path = hub.token_file(name)
        if path.exists():
            secrets.add(path.read_text().strip())
    secrets.discard("")
    assert len(secrets) >= 6
    for log in (hub.log_path, provider.log_path):
        text = log.read_text(errors="replace")
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert not leaked, f"{log.name} holds tokens: {leaked}"
