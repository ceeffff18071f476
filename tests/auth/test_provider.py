"""The embedded provider speaks standard OIDC: PKCE required, IAM-like claims, lifetimes, refresh, restarts."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import signal
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import jwt
import pytest
import requests

from aifacility.oidc import DemoUser, EmbeddedOIDCProvider, OIDCProviderError

REDIRECT = "http://127.0.0.1:9/cb"


def _authorize(p: EmbeddedOIDCProvider, username: str, password: str = "demo", *,
               pkce: bool = True) -> tuple[requests.Response, str]:
    """Run the browser part of the code flow with requests; return the last response and the PKCE verifier."""
    verifier = secrets.token_urlsafe(32)
    params = {"client_id": p.client_id, "response_type": "code", "redirect_uri": REDIRECT, "state": "s1",
              "scope": "openid profile email offline_access wlcg.groups"}
    if pkce:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params.update(code_challenge=challenge, code_challenge_method="S256")
    s = requests.Session()
    page = s.get(f"{p.issuer}/auth", params=params, timeout=10, allow_redirects=False)
    if page.status_code == 303 and page.headers["Location"].startswith(REDIRECT):
        return page, verifier  # an error answer to the client
    page = s.get(urljoin(page.url, page.headers["Location"]), timeout=10)
    action = unescape(re.search(r'action="([^"]+)"', page.text).group(1))
    resp = s.post(urljoin(page.url, action), data={"username": username, "password": password},
                  allow_redirects=False, timeout=10)
    while resp.status_code in (302, 303) and not resp.headers["Location"].startswith(REDIRECT):
        resp = s.get(urljoin(resp.url, resp.headers["Location"]), allow_redirects=False, timeout=10)
    return resp, verifier


def _code_flow(p: EmbeddedOIDCProvider, username: str) -> dict:
    resp, verifier = _authorize(p, username)
    code = parse_qs(urlparse(resp.headers["Location"]).query)["code"][0]
    token = requests.post(f"{p.issuer}/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
        "client_id": p.client_id, "client_secret": p.client_secret})
    token.raise_for_status()
    return token.json()


@pytest.fixture
def own_provider(tmp_path: Path) -> EmbeddedOIDCProvider:
    p = EmbeddedOIDCProvider(tmp_path, redirect_uris=[REDIRECT], access_token_ttl=30, id_token_ttl=40,
                             users=(DemoUser("carol", ("physics", "ml")),))
    yield p
    p.stop()


def test_code_flow_gives_iam_like_tokens(own_provider: EmbeddedOIDCProvider) -> None:
    p = own_provider.start()
    tokens = _code_flow(p, "carol")
    assert tokens["expires_in"] == 30 and tokens["refresh_token"]
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 40
    assert claims["preferred_username"] == "carol"
    assert claims["groups"] == ["physics", "ml"] and claims["wlcg.groups"] == ["/physics", "/ml"]
    me = requests.get(f"{p.issuer}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert me.json()["wlcg.groups"] == ["/physics", "/ml"]


def test_pkce_is_required(own_provider: EmbeddedOIDCProvider) -> None:
    p = own_provider.start()
    resp, _ = _authorize(p, "carol", pkce=False)
    answer = parse_qs(urlparse(resp.headers["Location"]).query)
    assert answer["error"] == ["invalid_request"]
    assert "PKCE" in answer["error_description"][0]


def test_wrong_password_stays_on_the_login_page(own_provider: EmbeddedOIDCProvider) -> None:
    p = own_provider.start()
    resp, _ = _authorize(p, "carol", password="wrong")
    assert resp.status_code == 401
    assert "Unknown username or wrong password." in resp.text


def test_refresh_token_survives_a_restart_of_the_provider(own_provider: EmbeddedOIDCProvider) -> None:
    p = own_provider.start()
    tokens = _code_flow(p, "carol")
    kid = requests.get(f"{p.issuer}/jwks", timeout=10).json()["keys"][0]["kid"]
    p.stop()
    p.start()
    assert requests.get(f"{p.issuer}/jwks", timeout=10).json()["keys"][0]["kid"] == kid
    fresh = requests.post(f"{p.issuer}/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": p.client_id, "client_secret": p.client_secret})
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["access_token"] != tokens["access_token"]
    # Rotation: the old refresh token is spent.
    again = requests.post(f"{p.issuer}/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": p.client_id, "client_secret": p.client_secret})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_grants_survive_a_kill_9_of_the_provider(own_provider: EmbeddedOIDCProvider) -> None:
    """Every grant and token is in the provider's journal before it answers: a SIGKILL loses none of them."""
    p = own_provider.start()
    tokens = [_code_flow(p, "carol") for _ in range(3)]
    assert p._proc is not None
    os.killpg(p._proc.pid, signal.SIGKILL)
    p._proc.wait()
    assert (p.state_dir / "store.journal").stat().st_size > 0
    p.start()
    for t in tokens:
        fresh = requests.post(f"{p.issuer}/token", timeout=10, data={
            "grant_type": "refresh_token", "refresh_token": t["refresh_token"],
            "client_id": p.client_id, "client_secret": p.client_secret})
        assert fresh.status_code == 200, fresh.text
    # The restart folded the journal into the snapshot
    assert any(k.startswith("RefreshToken:") for k in json.loads((p.state_dir / "store.json").read_text()))


def test_start_needs_a_redirect_uri(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="redirect_uris is empty"):
        EmbeddedOIDCProvider(tmp_path).start()


def test_lifetimes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="access_token_ttl must be a positive"):
        EmbeddedOIDCProvider(tmp_path, access_token_ttl=0)


def test_port_in_use_is_reported(own_provider: EmbeddedOIDCProvider, tmp_path: Path) -> None:
    p = own_provider.start()
    clash = EmbeddedOIDCProvider(tmp_path / "second", port=p.port, redirect_uris=[REDIRECT], startup_timeout=10)
    try:
        with pytest.raises(OIDCProviderError, match="is already in use"):
            clash.start()
    finally:
        clash.stop()  # nothing may outlive the test, even if the refusal regressed
