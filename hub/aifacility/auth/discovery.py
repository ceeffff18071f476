"""OpenID Connect discovery and ID token validation for the IAM authenticator.

OAuthenticator has no discovery of its own and does not check ID tokens, so this module reads the issuer's
`/.well-known/openid-configuration` and JWKS (cached), and validates ID tokens (signature, issuer, audience,
expiry) with PyJWT. Every failure is an `IdPError` whose message a person can act on, and never contains a token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

REQUIRED = ("issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")


class IdPError(Exception):
    """The identity provider is unreachable, misconfigured, or sent something that must not be trusted."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    raw: dict[str, Any]


class OIDCDiscovery:
    """Discovery document and JWKS of one issuer, fetched lazily and kept for `ttl` seconds."""

    def __init__(self, issuer: str, *, ttl: float = 3600.0, timeout: float = 10.0, validate_cert: bool = True):
        if not issuer.startswith(("https://", "http://")):
            raise IdPError(f"the IAM issuer {issuer!r} is not an http(s) URL (check iam.issuer in the facility file)")
        self.issuer = issuer.rstrip("/")
        self.ttl = ttl
        self.timeout = timeout
        self.validate_cert = validate_cert
        self._meta: ProviderMetadata | None = None
        self._meta_at = 0.0
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0

    async def _get_json(self, url: str, what: str) -> Any:
        client = AsyncHTTPClient()
        try:
            resp = await client.fetch(url, request_timeout=self.timeout, validate_cert=self.validate_cert,
                                      headers={"Accept": "application/json"})
        except HTTPClientError as e:
            raise IdPError(f"the identity provider answered HTTP {e.code} for its {what} ({url})") from None
        except OSError as e:
            raise IdPError(f"the identity provider at {self.issuer} cannot be reached ({e.strerror or e}); "
                           f"check that it is up and that iam.issuer is right") from None
        try:
            return json.loads(resp.body)
        except ValueError:
            raise IdPError(f"the identity provider's {what} at {url} is not JSON; is {self.issuer} an "
                           f"OpenID Connect issuer?") from None

    async def metadata(self, *, force: bool = False) -> ProviderMetadata:
        if self._meta and not force and time.monotonic() - self._meta_at < self.ttl:
            return self._meta
        url = f"{self.issuer}/.well-known/openid-configuration"
        doc = await self._get_json(url, "discovery document")
        if not isinstance(doc, dict):
            raise IdPError(f"the discovery document at {url} is not a JSON object")
        missing = [k for k in REQUIRED if not isinstance(doc.get(k), str)]
        if missing:
            raise IdPError(f"the discovery document at {url} lacks {', '.join(missing)}")
        if doc["issuer"].rstrip("/") != self.issuer:
            # OIDC Discovery 4.3: the issuer in the document must be the one we asked; anything else is a
            # misconfiguration or an impersonation attempt.
            raise IdPError(f"the discovery document at {url} names the issuer {doc['issuer']!r}, "
                           f"not {self.issuer!r}")
        self._meta = ProviderMetadata(doc["issuer"], doc["authorization_endpoint"], doc["token_endpoint"],
                                      doc["userinfo_endpoint"], doc["jwks_uri"], doc.get("end_session_endpoint"),
                                      doc)
        self._meta_at = time.monotonic()
        return self._meta

    async def jwks(self, *, force: bool = False) -> jwt.PyJWKSet:
        if self._jwks and not force and time.monotonic() - self._jwks_at < self.ttl:
            return self._jwks
        meta = await self.metadata()
        data = await self._get_json(meta.jwks_uri, "key set (JWKS)")
        try:
            self._jwks = jwt.PyJWKSet.from_dict(data)
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, TypeError, AttributeError):
            raise IdPError(f"the key set at {meta.jwks_uri} holds no usable signing key") from None
        self._jwks_at = time.monotonic()
        return self._jwks

    async def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.DecodeError:
            raise IdPError("the ID token is not a JWT") from None
        for attempt in (False, True):  # a key rotation at the IdP: fetch the key set again once
            keys = await self.jwks(force=attempt)
            for key in keys.keys:
                if kid is None or key.key_id == kid:
                    return key
        raise IdPError("the ID token is signed with a key the identity provider does not publish")

    async def validate_id_token(self, token: str, *, client_id: str, leeway: float = 30.0) -> dict[str, Any]:
        """Check signature, `iss`, `aud`, `exp` and `iat` (OIDC core 3.1.3.7); return the claims."""
        key = await self._key_for(token)
        meta = await self.metadata()
        try:
            return jwt.decode(token, key=key, algorithms=[key.algorithm_name or "RS256"], audience=client_id,
                              issuer=meta.issuer, leeway=leeway,
                              options={"require": ["iss", "sub", "aud", "exp", "iat"]})
        except jwt.ExpiredSignatureError:
            raise IdPError("the ID token has expired; log in again (if this repeats, check the clocks of the "
                           "hub and the identity provider)") from None
        except jwt.InvalidIssuerError:
            raise IdPError(f"the ID token was issued by someone other than {meta.issuer}") from None
        except jwt.InvalidAudienceError:
            raise IdPError(f"the ID token is not meant for this client ({client_id})") from None
        except jwt.InvalidSignatureError:
            raise IdPError("the ID token's signature does not verify with the identity provider's keys") from None
        except jwt.ImmatureSignatureError:
            raise IdPError("the ID token is not valid yet (check the clocks of the hub and the identity provider)") \
                from None
        except jwt.InvalidTokenError as e:
            raise IdPError(f"the ID token is not valid: {e}") from None
