"""Keeps the IAM access token of a running notebook session fresh.

Inside the session it asks the hub (`GET $JUPYTERHUB_API_URL/aifacility/token`, with the server's own
JUPYTERHUB_API_TOKEN) for the owner's current access token, writes it atomically to `$AIFACILITY_TOKEN_FILE`
(mode 0600; also announced as the WLCG `BEARER_TOKEN_FILE`) and puts it in the server's `ACCESS_TOKEN`, which
kernels and terminals started afterwards inherit. It asks again when the token has used up about half its
life, and retries with a growing pause when the hub cannot answer. It never logs the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

log = logging.getLogger("aifacility.notebook.token")
ENV_TOKEN = "ACCESS_TOKEN"


@dataclass
class FreshToken:
    access_token: str
    expires_at: float | None


class TokenFetchError(Exception):
    """The hub refused or could not answer; the message says why (it never contains a token)."""


@dataclass
class TokenRefresher:
    hub_api_url: str
    api_token: str
    token_file: Path
    margin: float = 120.0
    min_interval: float = 5.0
    max_backoff: float = 60.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TokenRefresher | None:
        env = dict(os.environ if env is None else env)
        missing = [k for k in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "AIFACILITY_TOKEN_FILE") if not env.get(k)]
        if missing:
            log.info("aifacility token refresher is off: %s not set", ", ".join(missing))
            return None
        return cls(env["JUPYTERHUB_API_URL"].rstrip("/"), env["JUPYTERHUB_API_TOKEN"],
                   Path(os.path.expanduser(env["AIFACILITY_TOKEN_FILE"])),
                   margin=float(env.get("AIFACILITY_TOKEN_REFRESH_MARGIN", "120")))

    async def fetch(self) -> FreshToken:
        url = f"{self.hub_api_url}/aifacility/token"
        try:
            resp = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {self.api_token}"},
                                                 request_timeout=30)
        except HTTPClientError as e:
            message = ""
            if e.response is not None:
                try:
                    message = json.loads(e.response.body).get("message", "")
                except ValueError:
                    message = ""
            raise TokenFetchError(f"the hub answered HTTP {e.code}: {message or e.message}") from None
        except OSError as e:
            raise TokenFetchError(f"the hub at {self.hub_api_url} cannot be reached: {e}") from None
        body: dict[str, Any] = json.loads(resp.body)
        return FreshToken(body["access_token"], body.get("expires_at"))

    def write(self, token: FreshToken) -> None:
        """Replace the token file atomically, so a reader never sees half a token."""
        self.token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.token_file.parent, prefix=".token-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(token.access_token + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.token_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.environ[ENV_TOKEN] = token.access_token

    def next_delay(self, token: FreshToken) -> float:
        if token.expires_at is None:
            return 300.0
        left = token.expires_at - time.time()
        # Ask again at half-life, and in any case before the hub's own renewal margin is reached.
        return max(self.min_interval, min(left / 2, left - self.margin / 2))

    async def refresh_once(self) -> float:
        token = await self.fetch()
        self.write(token)
        delay = self.next_delay(token)
        log.info("aifacility: IAM access token written to %s; next refresh in %.0f s", self.token_file, delay)
        return delay

    async def run(self) -> None:
        backoff = self.min_interval
        while True:
            try:
                delay = await self.refresh_once()
                backoff = self.min_interval
            except TokenFetchError as e:
                log.warning("aifacility: could not renew the IAM access token (%s); retrying in %.0f s", e, backoff)
                delay, backoff = backoff, min(backoff * 2, self.max_backoff)
            except OSError as e:
                log.warning("aifacility: cannot write the token file %s (%s); mount a writable volume there or "
                            "set AIFACILITY_TOKEN_FILE; retrying in %.0f s", self.token_file, e.strerror or e, backoff)
                delay, backoff = backoff, min(backoff * 2, self.max_backoff)
            await asyncio.sleep(delay)
