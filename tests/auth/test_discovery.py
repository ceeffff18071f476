"""Discovery and ID token validation against the real embedded provider, and against issuers that misbehave."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from auth_harness import free_port
from cryptography.hazmat.primitives.asymmetric import rsa

from aifacility.auth import IdPError, OIDCDiscovery
from aifacility.oidc import EmbeddedOIDCProvider


@pytest.fixture
def bad_issuer() -> Iterator[tuple[str, dict[str, Any]]]:
    """A local HTTP server whose answers each test chooses: {'body': bytes, 'type': str}."""
    answer: dict[str, Any] = {"body": b"<html>not an IdP</html>", "type": "text/html"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", answer["type"])
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answer
    server.shutdown()
    server.server_close()


def _sign(provider: EmbeddedOIDCProvider, **claims: Any) -> str:
    key = provider.signing_key
    now = int(time.time())
    body = {"iss": provider.issuer, "sub": "someone", "aud": provider.client_id, "iat": now, "exp": now + 300,
            **claims}
    return jwt.encode(body, jwt.PyJWK(key).key, algorithm="RS256", headers={"kid": key["kid"]})


async def test_discovery_of_the_embedded_provider(provider: EmbeddedOIDCProvider) -> None:
    meta = await OIDCDiscovery(provider.issuer).metadata()
    assert meta.issuer == provider.issuer
    assert meta.token_endpoint.startswith(provider.issuer)
    assert "S256" in meta.raw["code_challenge_methods_supported"]
    assert {"openid", "offline_access", "wlcg.groups"} <= set(meta.raw["scopes_supported"])
    assert "refresh_token" in meta.raw["grant_types_supported"]


async def test_unreachable_issuer_is_a_clear_error() -> None:
    issuer = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(IdPError, match=r"cannot be reached.*check that it is up"):
        await OIDCDiscovery(issuer, timeout=3).metadata()


async def test_issuer_answering_html_is_a_clear_error(bad_issuer: tuple[str, dict[str, Any]]) -> None:
    with pytest.raises(IdPError, match=r"is not JSON; is .* an OpenID Connect issuer"):
        await OIDCDiscovery(bad_issuer[0]).metadata()


async def test_discovery_without_endpoints_is_a_clear_error(bad_issuer: tuple[str, dict[str, Any]]) -> None:
    url, answer = bad_issuer
    answer.update(body=json.dumps({"issuer": url}).encode(), type="application/json")
    with pytest.raises(IdPError, match="lacks authorization_endpoint, token_endpoint"):
        await OIDCDiscovery(url).metadata()


async def test_discovery_naming_another_issuer_is_refused(bad_issuer: tuple[str, dict[str, Any]]) -> None:
    url, answer = bad_issuer
    doc = {k: f"{url}/x" for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")}
    answer.update(body=json.dumps({**doc, "issuer": "https://evil.example"}).encode(), type="application/json")
    with pytest.raises(IdPError, match=re.escape("names the issuer 'https://evil.example'")):
        await OIDCDiscovery(url).metadata()


def test_issuer_must_be_a_url() -> None:
    with pytest.raises(IdPError, match="not an http"):
        OIDCDiscovery("iam.example.org")


async def test_valid_id_token_is_accepted(provider: EmbeddedOIDCProvider) -> None:
    claims = await OIDCDiscovery(provider.issuer).validate_id_token(_sign(provider), client_id=provider.client_id)
    assert claims["sub"] == "someone"


async def test_id_token_from_another_issuer_is_refused(provider: EmbeddedOIDCProvider) -> None:
    token = _sign(provider, iss="https://iam.evil.example")
    with pytest.raises(IdPError, match=f"issued by someone other than {provider.issuer}"):
        await OIDCDiscovery(provider.issuer).validate_id_token(token, client_id=provider.client_id)


async def test_expired_id_token_is_refused(provider: EmbeddedOIDCProvider) -> None:
    now = int(time.time())
    token = _sign(provider, iat=now - 7200, exp=now - 3600)
    with pytest.raises(IdPError, match="has expired; log in again"):
        await OIDCDiscovery(provider.issuer).validate_id_token(token, client_id=provider.client_id)


async def test_id_token_for_another_client_is_refused(provider: EmbeddedOIDCProvider) -> None:
    with pytest.raises(IdPError, match="not meant for this client"):
        await OIDCDiscovery(provider.issuer).validate_id_token(_sign(provider, aud="other"),
                                                               client_id=provider.client_id)


async def test_id_token_signed_by_a_stranger_is_refused(provider: EmbeddedOIDCProvider) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode({"iss": provider.issuer, "sub": "x", "aud": provider.client_id, "iat": now, "exp": now + 60},
                       stranger, algorithm="RS256", headers={"kid": provider.signing_key["kid"]})
    with pytest.raises(IdPError, match="signature does not verify"):
        await OIDCDiscovery(provider.issuer).validate_id_token(token, client_id=provider.client_id)


async def test_garbage_is_not_a_jwt(provider: EmbeddedOIDCProvider) -> None:
    with pytest.raises(IdPError, match="not a JWT"):
        await OIDCDiscovery(provider.issuer).validate_id_token("garbage", client_id=provider.client_id)
