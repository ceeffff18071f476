"""Hub groups follow IAM groups at every login and refresh; an IAM outage is a readable page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from auth_harness import LocalHub, free_port, login

from aifacility.oidc import DemoUser, EmbeddedOIDCProvider

pytestmark = pytest.mark.slow


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[LocalHub, EmbeddedOIDCProvider]]:
    port = free_port()
    provider = EmbeddedOIDCProvider(tmp_path / "oidc", users=(DemoUser("bob", ("physics",)),),
                                    redirect_uris=[f"http://127.0.0.1:{port}/hub/oauth_callback"])
    provider.start()
    hub = LocalHub(tmp_path / "hub", provider=provider, port=port)
    try:
        yield hub.start(), provider
    finally:
        hub.stop()
        provider.stop()


def _restart_with(provider: EmbeddedOIDCProvider, groups: tuple[str, ...]) -> EmbeddedOIDCProvider:
    """IAM changed bob's groups: the same provider (same keys, same grants) with new membership."""
    provider.stop()
    changed = EmbeddedOIDCProvider(provider.state_dir, port=provider.port, redirect_uris=provider.redirect_uris,
                                   users=(DemoUser("bob", groups),))
    return changed.start()


def test_groups_follow_iam_and_leaving_every_allowed_group_ends_the_login(
        own: tuple[LocalHub, EmbeddedOIDCProvider]) -> None:
    hub, provider = own
    login(hub, "bob")
    assert hub.api("GET", "/users/bob").json()["groups"] == ["physics"]

    provider = _restart_with(provider, ("physics", "ml", "admins"))
    try:
        login(hub, "bob")
        bob = hub.api("GET", "/users/bob").json()
        assert sorted(bob["groups"]) == ["admins", "ml", "physics"] and bob["admin"] is True

        provider = _restart_with(provider, ("ml",))
        login(hub, "bob")
        bob = hub.api("GET", "/users/bob").json()
        assert bob["groups"] == ["ml"] and bob["admin"] is False

        # Removed from every facility group in IAM: the next refresh of the hub login fails.
        provider = _restart_with(provider, ())
        spawn = hub.api("POST", "/users/bob/server")  # a spawn refreshes auth first (refresh_pre_spawn)
        assert spawn.status_code == 403 and "login" in spawn.json()["message"]
        assert hub.api("GET", "/users/bob").json()["servers"] == {}
        _, refused = login(hub, "bob")
        assert refused.status_code == 403 and "not a member of any group" in refused.text
    finally:
        provider.stop()


def test_iam_outage_is_a_readable_page(tmp_path: Path) -> None:
    # A provider that is configured but never started: its issuer does not answer.
    port = free_port()
    down = EmbeddedOIDCProvider(tmp_path / "oidc", redirect_uris=[f"http://127.0.0.1:{port}/hub/oauth_callback"])
    hub = LocalHub(tmp_path / "hub", provider=down, port=port).start()
    try:
        resp = requests.get(f"{hub.url}/hub/oauth_login", timeout=30)
        assert resp.status_code == 503
        assert "Login is not possible right now" in resp.text and "cannot be reached" in resp.text
        assert "Traceback" not in resp.text
    finally:
        hub.stop()
