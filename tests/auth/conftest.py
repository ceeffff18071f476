"""Fixtures: the embedded OIDC provider and a real JupyterHub logging in through it (loopback, temp dirs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from auth_harness import ACCESS_TOKEN_TTL, TOKEN_MIN_LIFETIME, LocalHub, free_port

from aifacility.oidc import DEMO_USERS, DemoUser, EmbeddedOIDCProvider

# "Alice" normalises to the same facility username as "alice" but is another IAM account.
TEST_USERS = (*DEMO_USERS, DemoUser("Alice", ("physics",), name="Another Alice"),
              DemoUser("___", ("physics",), name="No Letters"))


@pytest.fixture(scope="session")
def hub_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory, hub_port: int) -> Iterator[EmbeddedOIDCProvider]:
    p = EmbeddedOIDCProvider(tmp_path_factory.mktemp("oidc"), users=TEST_USERS,
                             redirect_uris=[f"http://127.0.0.1:{hub_port}/hub/oauth_callback"],
                             access_token_ttl=ACCESS_TOKEN_TTL)
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory, provider: EmbeddedOIDCProvider, hub_port: int) -> Iterator[LocalHub]:
    h = LocalHub(tmp_path_factory.mktemp("hub"), provider=provider, port=hub_port,
                 token_min_lifetime=TOKEN_MIN_LIFETIME)
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    d = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d
