"""The few hub REST calls the service makes with its own token (scopes: read:servers, read:users:name)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError


class HubClient:
    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    async def servers(self, user: str) -> dict[str, dict[str, Any]] | None:
        """The user's servers (name → REST model); None when the hub has no such user."""
        try:
            resp = await AsyncHTTPClient().fetch(f"{self.api_url}/users/{quote(user, safe='')}",
                                                 headers={"Authorization": f"token {self.token}"})
        except HTTPClientError as e:
            if e.code == 404:
                return None
            raise
        return json.loads(resp.body).get("servers", {})
