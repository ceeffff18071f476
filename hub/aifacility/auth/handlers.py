"""Hub handlers of the IAM login: login redirect, callback (with the refusal page), and the session token API."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.utils import compare_token
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLoginHandler, _deserialize_state
from tornado import web

from aifacility.auth.discovery import IdPError
from aifacility.auth.jobs import IAM_TOKENS_SCOPE
from aifacility.auth.refusal import Refusal

if TYPE_CHECKING:
    from aifacility.auth.authenticator import IAMAuthenticator

REFUSED_TEMPLATE = "aifacility-refused.html"


class IAMLoginHandler(OAuthLoginHandler):
    """Reads the issuer's discovery document before redirecting, so an IAM outage is a readable page."""

    async def get(self) -> None:
        try:
            await self.authenticator.discover()
        except IdPError as e:
            raise web.HTTPError(503, f"Login is not possible right now: {e}. Try again later, or tell "
                                     f"{self.authenticator.contact}.") from None
        super().get()


class IAMCallbackHandler(OAuthCallbackHandler):
    aifacility_refusal: Refusal | None = None

    def _request_summary(self) -> str:
        # Tornado logs refused requests with their full URI; a callback's query holds the authorization code.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def check_state(self) -> None:
        # Same checks as OAuthenticator (state in the URL == state in this browser's signed, one-use cookie),
        # with messages that tell the person what to do; a replayed callback finds its cookie already spent.
        cookie_state = self.get_state_cookie()
        url_state = self.get_argument("state", "")
        again = "Start again from the login page."
        if not cookie_state:
            raise web.HTTPError(400, "This login response does not belong to a login started in this browser, or "
                                     f"it was already used (OAuth state cookie missing). {again}")
        if not url_state:
            raise web.HTTPError(400, f"The identity provider's answer has no OAuth state. {again}")
        try:
            url_id = _deserialize_state(url_state).get("state_id")
        except Exception:
            url_id = None
        if not url_id or _deserialize_state(cookie_state).get("state_id") != url_id:
            self.log.warning("OAuth state mismatch on the login callback (forged or stale response)")
            raise web.HTTPError(400, "This login response does not match the login started in this browser "
                                     f"(OAuth state mismatch); it may be forged or stale. {again}")

    async def get(self) -> None:
        self.check_arguments()
        user = await self.login_user()
        if user is None:
            await self._refused()
            return
        self.redirect(self.get_next_url(user))

    async def _refused(self) -> None:
        auth: IAMAuthenticator = self.authenticator
        refusal = self.aifacility_refusal or Refusal("groups")
        self.set_status(403)
        self.log.info("Login refused for %s (%s)", refusal.username or refusal.iam_username or "?", refusal.reason)
        html = await self.render_template(
            REFUSED_TEMPLATE, refusal=refusal, contact=auth.contact,
            allowed_groups=sorted(auth.allowed_groups), login_url=self.settings["login_url"],
        )
        self.finish(html)


class SessionTokenHandler(APIHandler):
    """`GET /hub/api/aifacility/token`: a fresh IAM access token for the calling notebook server's owner.

    Only the API token the hub gave a running server (JUPYTERHUB_API_TOKEN) is accepted, and only for its own
    user; browser cookies, personal API tokens and services are refused, except a service holding
    IAM_TOKENS_SCOPE, which names the user (`?user=`). The answer is never cached.
    """

    def check_xsrf_cookie(self) -> None:
        # Cookie-authenticated calls are refused below anyway; tokens need no XSRF check.
        return None

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status, "message": message}))

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        orm_token = self.get_token()
        if orm_token is not None and orm_token.service is not None:
            return await self._for_service(orm_token.service)
        user = await self.get_current_user()
        if orm_token is None or user is None or orm_token.user is None:
            return self._refuse(403, "This endpoint answers only a notebook server, with the API token the hub "
                                     "gave it (JUPYTERHUB_API_TOKEN).")
        asked = self.get_argument("user", user.name)
        if asked != user.name:
            self.log.warning("Refused: %s's server asked for the IAM token of %s", user.name, asked)
            return self._refuse(403, f"A server may read only its own user's token: this is {user.name}'s "
                                     f"server, and it asked for {asked}'s.")
        if not _is_running_servers_token(user, self.get_auth_token() or ""):
            return self._refuse(403, "Only the API token of a running notebook server (the one the hub gave it "
                                     "at its start) may read the IAM token; personal API tokens, browser "
                                     "sessions and the tokens of servers that have stopped may not.")
        await self._answer(user)

    async def _for_service(self, service: Any) -> None:
        await self.get_current_user()  # resolves the token's scopes
        if IAM_TOKENS_SCOPE not in self.expanded_scopes:  # unfiltered only: the grant is for every user
            return self._refuse(403, f"The service {service.name} may not read IAM tokens: that takes the "
                                     f"{IAM_TOKENS_SCOPE} scope, which only the jobs service holds.")
        asked = self.get_argument("user", "")
        user = self.find_user(asked) if asked and len(asked) <= 255 else None
        if user is None:
            return self._refuse(404, f"No user {asked[:64]!r}: give ?user=NAME of a hub user.")
        self.log.info("Service %s read the IAM token of %s", service.name, user.name)
        await self._answer(user)

    async def _answer(self, user: Any) -> None:
        auth: IAMAuthenticator = self.authenticator
        refreshed = await auth.refresh_user(user, self)
        if refreshed is False:
            return self._refuse(401, "Your IAM login has ended (the refresh token was refused or expired). "
                                     "Log in to the hub again to renew it.")
        if isinstance(refreshed, dict):
            refreshed["name"] = user.name
            await self.auth_to_user(refreshed, user)
        state = await user.get_auth_state() or {}
        token_info: dict[str, Any] = state.get("token_response") or {}
        if not state.get("access_token"):
            return self._refuse(404, "No IAM access token is stored for this user; log in to the hub again.")
        left = auth.seconds_left(token_info)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({
            "user": user.name,
            "access_token": state["access_token"],
            "token_type": token_info.get("token_type", "Bearer"),
            "expires_at": None if left == float("inf") else int(time.time() + left),
            "scope": state.get("scope") or [],
        }))


def _is_running_servers_token(user: Any, token: str) -> bool:
    """Whether `token` is the API token the hub gave one of `user`'s servers that is running or starting now.

    What a token's note or scopes say can be copied into a personal token; what the hub ties to a server is its
    OAuth client, whose secret is the server's current API token (JupyterHub `User.spawn`, also after a spawner
    re-used a token), kept in the database across hub restarts and deleted when the server stops. A token of a
    server that stopped or was replaced (an orphan pod's) no longer matches.
    """
    if not token:
        return False
    for orm_spawner in user.orm_user.orm_spawners.values():
        client = orm_spawner.oauth_client
        if orm_spawner.server is None or client is None or not client.secret:
            continue
        if compare_token(client.secret, token):
            return True
    return False
