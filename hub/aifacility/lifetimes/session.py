"""Inside the session: the remaining time (and budgets at 80% or more) as a JupyterLab notification, without a
JupyterLab build step.

JupyterLab (4.x) asks its server once, when the page loads, whether there is "an update" (`GET /lab/api/update`,
shown in the notification centre) and lets a site replace that check: `LabApp.check_for_updates_class`. This class
answers with the session's schedule from the lifetimes service instead, e.g. "This session ends at 18:05 UTC (in
45 min)". Reloading the page refreshes it; the live countdown and the Extend button are on the hub's home page.

`aifacility.lifetimes.configure` enables it on the sessions' command line
(`--LabApp.check_for_updates_class=aifacility.lifetimes.session.SessionNotice`); the notebook images carry the
`aifacility` package.

It uses what the hub gives every server: JUPYTERHUB_API_TOKEN (whose `server` role `configure` widens with
`custom:lifetimes:read!user` and access to the service), JUPYTERHUB_USER, JUPYTERHUB_SERVER_NAME, plus
AIFACILITY_LIFETIMES_API (the service's API address, set by `configure` in the spawner environment).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from jupyterlab.handlers.announcements import CheckForUpdateABC
from tornado.httpclient import AsyncHTTPClient

HUB_HOME_HINT = "Extend it from the hub's home page (File > Hub Control Panel)."


async def _get_json(url: str, token: str) -> Any:
    resp = await AsyncHTTPClient().fetch(url, request_timeout=10, headers={"Authorization": f"token {token}"})
    return json.loads(resp.body)


class SessionNotice(CheckForUpdateABC):
    """`check_for_updates_class` answering with this session's end and the budgets over its user at 80% or more
    (never raises: a notice is optional)."""

    async def __call__(self) -> Any:
        lifetime = await self.lifetime()
        budgets = await self.budgets()
        text = " ".join(t for t in (lifetime, budgets) if t)
        return text or None

    async def budgets(self) -> str | None:
        """"Budget: ..." from the usage service (AIFACILITY_USAGE_API), when a budget over the user is at 80%."""
        api = os.environ.get("AIFACILITY_USAGE_API")
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if not (api and token):
            return None
        try:
            state = await _get_json(f"{api.rstrip('/')}/budgets", token)
        except Exception as e:  # as below: never break the page load
            self.logger.warning("aifacility: could not read the budgets: %s", e)
            return None
        messages = [str(b.get("message", "")) for b in state.get("budgets", [])]
        return " ".join(f"Budget: {m}" for m in messages if m) or None

    async def lifetime(self) -> str | None:
        api = os.environ.get("AIFACILITY_LIFETIMES_API")
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        user = os.environ.get("JUPYTERHUB_USER")
        if not (api and token and user):
            return None
        server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        path = f"users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
        try:
            state = await _get_json(f"{api.rstrip('/')}/{path}", token)
        except Exception as e:  # the service down or unreachable must not break JupyterLab's page load
            self.logger.warning("aifacility: could not read this session's lifetime: %s", e)
            return None
        text = str(state.get("message", ""))
        if state.get("extendable_hours", 0) > 0 and state.get("stop_reason") == "lifetime":
            text += " " + HUB_HOME_HINT
        return text or None
