"""`IAMAuthenticator`: OAuthenticator's GenericOAuthenticator with the INDIGO IAM conventions of the facility.

What it adds to the stock class (which it keeps for the code flow, PKCE, `auth_state` and managed groups):
- endpoints from the issuer's discovery document, fetched lazily and cached (`discovery.OIDCDiscovery`);
- ID token validation on every token response (signature, issuer, audience, expiry);
- groups from `groups` and `wlcg.groups`, in the ID token and userinfo, with the leading `/` removed;
- usernames normalised to valid Kubernetes/POSIX names, and a second IAM account that normalises to a name
  already held by another IAM subject refused instead of merged;
- a refusal page that says why and whom to ask;
- proactive refresh: the access token is renewed when it has less than `token_min_lifetime` seconds left,
  so that the session's token file never holds an expired token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Float, Integer, List, Unicode, default

from aifacility.auth import names
from aifacility.auth.discovery import IdPError, OIDCDiscovery
from aifacility.auth.handlers import IAMCallbackHandler, IAMLoginHandler, SessionTokenHandler
from aifacility.auth.refusal import Refusal

GROUPS_KEY = "aifacility_groups"


class IAMAuthenticator(GenericOAuthenticator):
    issuer = Unicode(config=True, help="The IAM issuer URL; endpoints come from its discovery document.")
    groups_claims = List(Unicode(), ["groups", "wlcg.groups"], config=True,
                         help="Claims (in the ID token and userinfo) whose values are the user's groups.")
    group_prefix = Unicode("/", config=True, help="Prefix removed from group names (wlcg.groups has '/').")
    contact = Unicode("the facility administrators", config=True,
                      help="Whom a refused user should ask for access (shown on the refusal page).")
    discovery_ttl = Float(3600.0, config=True, help="Seconds the discovery document and JWKS are cached.")
    id_token_leeway = Float(30.0, config=True, help="Clock skew tolerated when checking ID token times.")
    token_min_lifetime = Integer(120, config=True,
                                 help="Renew the access token when fewer seconds than this remain.")
    event_db = Unicode("", config=True,
                       help="The admin database of events: their temporary accounts (made from join codes at "
                            "/hub/join, unknown to IAM) stay logged in while their event runs.")

    @default("login_service")
    def _login_service_default(self) -> str:
        return "INDIGO IAM"

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "profile", "email", "offline_access", "wlcg.groups"]

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "preferred_username"

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self) -> str:
        return f"{self.user_auth_state_key}.{GROUPS_KEY}"

    login_handler = IAMLoginHandler
    callback_handler = IAMCallbackHandler

    _discovery: OIDCDiscovery | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._refresh_locks: dict[str, asyncio.Lock] = {}

    @property
    def discovery(self) -> OIDCDiscovery:
        if self._discovery is None or self._discovery.issuer != self.issuer.rstrip("/"):
            if not self.issuer:
                raise IdPError("no IAM issuer is configured (iam.issuer in the facility file)")
            self._discovery = OIDCDiscovery(self.issuer, ttl=self.discovery_ttl,
                                            validate_cert=self.validate_server_cert)
        return self._discovery

    async def discover(self) -> None:
        """Fill the OAuth endpoints from the discovery document (cached)."""
        meta = await self.discovery.metadata()
        self.authorize_url = meta.authorization_endpoint
        self.token_url = meta.token_endpoint
        self.userdata_url = meta.userinfo_endpoint

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        return [*super().get_handlers(app), (r"/api/aifacility/token", SessionTokenHandler)]

    # ---- usernames ----

    def normalize_username(self, username: str) -> str:
        # Also called on config and REST API names: an unusable one is returned as is, so that
        # validate_username refuses it with a 400 instead of a 500.
        username = super().normalize_username(username)
        try:
            return names.normalize_username(username)
        except names.InvalidUsername:
            return username

    def validate_username(self, username: str) -> bool:
        return names.is_valid_username(username) and super().validate_username(username)

    # ---- tokens and claims ----

    async def get_token_info(self, handler: Any, params: dict[str, Any]) -> dict[str, Any]:
        try:
            await self.discover()
            token_info = await super().get_token_info(handler, params)
        except IdPError as e:
            raise web.HTTPError(503, f"The identity provider cannot be used: {e}") from None
        except HTTPClientError as e:
            # The body (logged by OAuthenticator) is the IdP's error object; it holds no token.
            if e.code >= 500:  # 599: timeout or connection failure
                raise web.HTTPError(503, f"The identity provider is not answering (HTTP {e.code}); "
                                         f"try again later") from None
            raise web.HTTPError(403, f"The identity provider refused the token request (HTTP {e.code}); "
                                     f"start the login again") from None
        except OSError as e:
            raise web.HTTPError(503, f"The identity provider cannot be reached ({e.strerror or e}); "
                                     f"try again later") from None
        token_info["received_at"] = time.time()
        id_token = token_info.get("id_token")
        if id_token:
            try:
                token_info["id_token_claims"] = await self.discovery.validate_id_token(
                    id_token, client_id=self.client_id, leeway=self.id_token_leeway)
            except IdPError as e:
                raise web.HTTPError(403, f"Login refused: {e}.") from None
        elif params.get("grant_type") == "authorization_code" and "openid" in self.scope:
            raise web.HTTPError(403, "Login refused: the identity provider returned no ID token.")
        return token_info

    async def token_to_user(self, token_info: dict[str, Any]) -> dict[str, Any]:
        try:
            await self.discover()
        except IdPError as e:
            raise web.HTTPError(503, f"The identity provider cannot be used: {e}") from None
        userinfo = await super().token_to_user(token_info)
        claims = token_info.get("id_token_claims") or {}
        if claims and userinfo.get("sub") != claims.get("sub"):
            # OIDC core 5.3.2: a userinfo answer about another subject must not be used.
            raise web.HTTPError(403, "Login refused: the identity provider's userinfo is about another account "
                                     "than the ID token.")
        merged = {k: v for k, v in claims.items() if k not in ("aud", "exp", "iat", "nbf", "auth_time", "at_hash")}
        merged.update(userinfo)
        merged[GROUPS_KEY] = sorted(self.groups_from(claims) | self.groups_from(userinfo))
        return merged

    def groups_from(self, claims: dict[str, Any]) -> set[str]:
        groups: set[str] = set()
        for claim in self.groups_claims:
            value = claims.get(claim)
            if isinstance(value, str):
                value = value.split() if claim == "wlcg.groups" else [value]
            if isinstance(value, list):
                groups |= {names.normalize_group(g, self.group_prefix) for g in value if isinstance(g, str) and g}
        return groups

    def user_info_to_username(self, user_info: dict[str, Any]) -> str:
        raw = user_info.get(self.username_claim) if isinstance(self.username_claim, str) else None
        if not raw:
            raise web.HTTPError(403, f"Login refused: the identity provider sent no '{self.username_claim}' "
                                     f"for this account.")
        return str(raw)

    # ---- login ----

    async def authenticate(self, handler: Any, data: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        model = await super().authenticate(handler, data, **kwargs)
        user_info = model["auth_state"][self.user_auth_state_key]
        if not names.is_valid_username(model["name"]):
            try:
                names.normalize_username(model["name"])
                detail = f"'{model['name']}' is not a valid facility username"
            except names.InvalidUsername as e:
                detail = str(e)
            handler.aifacility_refusal = Refusal("username", iam_username=model["name"], detail=detail)
            return None
        refusal = await self._collision(handler, model["name"], user_info)
        if refusal:
            handler.aifacility_refusal = refusal
            return None
        # Kept for the refusal page, in case check_allowed says no.
        handler.aifacility_refusal = Refusal("groups", username=model["name"],
                                             iam_username=str(user_info.get(self.username_claim, "")),
                                             groups=list(model.get("groups") or []))
        return model

    async def _collision(self, handler: Any, name: str, user_info: dict[str, Any]) -> Refusal | None:
        existing = handler.find_user(name)
        if existing is None:
            return None
        state = await existing.get_auth_state() or {}
        known_sub = (state.get(self.user_auth_state_key) or {}).get("sub")
        if known_sub and known_sub != user_info.get("sub"):
            return Refusal("collision", username=name, iam_username=str(user_info.get(self.username_claim, "")),
                           detail=f"the facility username '{name}' already belongs to another IAM account")
        return None

    def is_allowed_model(self, auth_model: dict[str, Any]) -> bool:
        groups = set(auth_model.get("groups") or [])
        return bool(auth_model.get("admin")) or auth_model["name"] in self.allowed_users \
            or bool(groups & self.allowed_groups)

    # ---- refresh ----

    async def _is_event_account(self, name: str) -> bool:
        """A temporary account of an event that has not ended: it has no IAM tokens to refresh, and no login
        either once its event is over (the admin service then removes it)."""
        if not self.event_db:
            return False
        from aifacility.events.store import EventStore
        from aifacility.quotas.store import policy_store

        return await asyncio.to_thread(EventStore(policy_store(self.event_db).engine).is_temporary, name)

    @staticmethod
    def seconds_left(token_info: dict[str, Any]) -> float:
        try:
            return float(token_info["received_at"]) + float(token_info["expires_in"]) - time.time()
        except (KeyError, TypeError, ValueError):
            return float("inf")  # the IdP gave no lifetime: the userinfo call below tells

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> bool | dict[str, Any]:
        """Re-read userinfo (groups may have changed in IAM) and renew the access token before it expires.

        Returns False (log in again) when the refresh token is gone or refused, or when the user has left
        every allowed group; IdP outages keep the current state rather than logging everybody out.
        One refresh per user at a time: IAM rotates refresh tokens, and presenting a spent one (two requests
        racing) would make the provider revoke the whole grant.
        """
        lock = self._refresh_locks.setdefault(user.name, asyncio.Lock())
        async with lock:
            return await self._refresh_user(user, handler)

    async def _refresh_user(self, user: Any, handler: Any) -> bool | dict[str, Any]:
        auth_state = await user.get_auth_state()
        if not auth_state:
            return await self._is_event_account(user.name)
        token_info = dict(auth_state.get("token_response") or {})
        model: dict[str, Any] | None = None
        # The stored ID token describes the last login; only a fresh answer (userinfo, or a new ID token) may
        # tell the groups now, or a user removed from a group in IAM would keep it until the next login.
        token_info["id_token_claims"] = None
        if self.seconds_left(token_info) > self.token_min_lifetime:
            try:
                model = await self._token_to_auth_model(token_info)
            except HTTPClientError as e:
                if not 400 <= e.code < 500:
                    self.log.warning("IAM userinfo failed for %s (HTTP %s); keeping the current tokens",
                                     user.name, e.code)
                    return True
            except (web.HTTPError, OSError) as e:
                self.log.warning("IAM unreachable while refreshing %s (%s); keeping the current tokens",
                                 user.name, type(e).__name__)
                return True
        if model is None:
            refresh_token = auth_state.get("refresh_token")
            if not refresh_token:
                self.log.info("No refresh token for %s: a new login is needed", user.name)
                return False
            try:
                fresh = await self.get_token_info(handler, self.build_refresh_token_request_params(refresh_token))
                fresh.setdefault("refresh_token", refresh_token)
                fresh.setdefault("id_token", token_info.get("id_token"))
                model = await self._token_to_auth_model(fresh)
            except (web.HTTPError, HTTPClientError, OSError) as e:
                if isinstance(e, OSError) or getattr(e, "status_code", None) == 503:
                    self.log.warning("IAM unreachable while renewing the token of %s; keeping the current one",
                                     user.name)
                    return True
                self.log.info("Refreshing the IAM tokens of %s failed (%s): a new login is needed",
                              user.name, getattr(e, "log_message", None) or type(e).__name__)
                return False
            # Saved at once, so that a request waiting on the lock sees the new tokens, not the spent ones.
            await user.save_auth_state(model["auth_state"])
            self.log.info("Renewed the IAM access token of %s", user.name)
        if model["name"] != user.name:
            return False
        if self.manage_groups and not self.is_allowed_model(model):
            self.log.info("%s is no longer in an allowed IAM group: a new login is needed", user.name)
            return False
        return model
