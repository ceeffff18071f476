"""The few JupyterHub REST calls the facility's hub-managed services make with their own token.

Shared by the lifetimes service (reads a user's servers: `read:users:name`, `read:servers`), the spawn keeper
(also starts servers: `servers`), the jobs service (a user's groups: `read:users:groups`; running jobs' fresh
IAM tokens: `custom:iam-tokens:read`) and the admin service (whether a group or user exists:
`read:groups:name`, `read:users:name`); each service's role grants only what it calls.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError


class HubClient:
    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def servers(self, user: str) -> dict[str, dict[str, Any]] | None:
        """The user's pending or running servers (name → REST model); None when the hub has no such user."""
        model = await self.user(user)
        if model is None:
            return None
        servers: dict[str, dict[str, Any]] = model.get("servers") or {}
        return servers

    async def _model(self, path: str) -> dict[str, Any] | None:
        """A REST model; None when the hub has none there (404)."""
        try:
            resp = await AsyncHTTPClient().fetch(f"{self.api_url}{path}", headers=self._headers, request_timeout=30)
        except HTTPClientError as e:
            if e.code == 404:
                return None
            raise
        model: dict[str, Any] = json.loads(resp.body)
        return model

    async def user(self, user: str) -> dict[str, Any] | None:
        """The user's REST model (name, admin, groups with `read:users:groups`); None when there is no such user."""
        return await self._model(f"/users/{quote(user, safe='')}")

    async def start_server(self, user: str, server: str) -> tuple[int, str]:
        """Start a server with the options the hub saved for it (no body); (HTTP status, the hub's message)."""
        path = f"/users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
        try:
            resp = await AsyncHTTPClient().fetch(self.api_url + path, method="POST", body="", headers=self._headers,
                                                 request_timeout=120)
            return resp.code, ""
        except HTTPClientError as e:
            body = e.response.body if e.response is not None else b""
            try:
                message = str(json.loads(body).get("message", ""))
            except (ValueError, AttributeError):
                message = body.decode(errors="replace")[:300]
            return e.code, message

    async def iam_token(self, user: str) -> dict[str, Any] | None:
        """The user's fresh IAM access token (`access_token`, `expires_at`), for a service holding the hub's
        `custom:iam-tokens:read` scope; None when the user has none (their IAM login ended, or no such user)."""
        try:
            resp = await AsyncHTTPClient().fetch(f"{self.api_url}/aifacility/token?user={quote(user, safe='')}",
                                                 headers=self._headers, request_timeout=30)
        except HTTPClientError as e:
            if e.code in (401, 404):
                return None
            raise
        model: dict[str, Any] = json.loads(resp.body)
        return model

    async def group(self, name: str) -> dict[str, Any] | None:
        """A group's REST model (`read:groups:name`); None when the hub has no such group."""
        return await self._model(f"/groups/{quote(name, safe='')}")

    async def stop_server(self, user: str, server: str) -> None:
        """Stop a server (`delete:servers`); one already stopped or gone is fine."""
        path = f"/users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
        try:
            await AsyncHTTPClient().fetch(self.api_url + path, method="DELETE", headers=self._headers,
                                          request_timeout=120)
        except HTTPClientError as e:
            if e.code not in (400, 404):  # 400: not running
                raise

    async def delete_user(self, user: str) -> None:
        """Remove a user (`admin:users`): the hub stops their servers first; one already gone is fine. A 400 (a
        server still stopping) is raised, for the caller to try again later."""
        try:
            await AsyncHTTPClient().fetch(f"{self.api_url}/users/{quote(user, safe='')}", method="DELETE",
                                          headers=self._headers, request_timeout=120)
        except HTTPClientError as e:
            if e.code != 404:
                raise
