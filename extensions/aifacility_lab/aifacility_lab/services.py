"""The facility's hub services, as this session reaches them: with the session's own token
(`JUPYTERHUB_API_TOKEN`), whose scopes the hub limits to this user, so a session can only ever see and act on its
own user's sessions, jobs and budgets; the services check it again on every request.

No HTTP handling of the browser's side here (handlers.py does that): one method per thing the extension shows or
does, raising `ServiceError` with a sentence a person can act on.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

# Job names the jobs service gives (Kubernetes object names): anything else is refused before a request leaves.
JOB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
MAX_BODY_BYTES = 64 * 1024
TIMEOUT = 30.0


class ServiceError(Exception):
    """A refusal or failure, with the HTTP status to answer and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SessionEnvironment:
    """What the hub gives every session (see the hub's `configure` functions)."""

    token: str
    user: str
    server: str
    home: Path
    lifetimes_api: str | None
    jobs_api: str | None
    usage_api: str | None
    token_file: str | None

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> SessionEnvironment:
        def url(name: str) -> str | None:
            return (env.get(name) or "").rstrip("/") or None

        return cls(token=env.get("JUPYTERHUB_API_TOKEN", ""), user=env.get("JUPYTERHUB_USER", ""),
                   server=env.get("JUPYTERHUB_SERVER_NAME", ""), home=Path(env.get("HOME", "/home/jovyan")),
                   lifetimes_api=url("AIFACILITY_LIFETIMES_API"), jobs_api=url("AIFACILITY_JOBS_API"),
                   usage_api=url("AIFACILITY_USAGE_API"), token_file=env.get("AIFACILITY_TOKEN_FILE"))


class FacilityServices:
    def __init__(self, env: SessionEnvironment, root_dir: str) -> None:
        self.env = env
        self.root_dir = Path(root_dir).resolve()

    # -- the session: lifetime, accelerator, budgets ------------------------------------------------------------

    def _server_path(self) -> str:
        user = quote(self.env.user, safe="")
        return f"users/{user}/" + (f"servers/{quote(self.env.server, safe='')}" if self.env.server else "server")

    async def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lifetime": None, "lifetime_error": None, "accelerator": None, "budgets": [],
                               "budget_events": []}
        if self.env.lifetimes_api:
            try:
                lifetime = await self._json("GET", f"{self.env.lifetimes_api}/{self._server_path()}")
                out["accelerator"] = lifetime.pop("accelerator", None)
                out["lifetime"] = _with_warning_text(lifetime)
            except ServiceError as e:
                out["lifetime_error"] = e.message
        if self.env.usage_api:
            try:
                budgets = await self._json("GET", f"{self.env.usage_api}/budgets")
                out["budgets"] = budgets.get("use", budgets.get("budgets", []))
                out["budget_events"] = budgets.get("events", [])
            except ServiceError:
                pass  # budgets are optional: the status bar leaves them out
        return out

    async def extend(self, body: Any) -> dict[str, Any]:
        if not self.env.lifetimes_api:
            raise ServiceError(404, "This session has no lifetime to extend.")
        if not isinstance(body, dict) or set(body) != {"hours"}:
            raise ServiceError(400, 'Send {"hours": N}: how many hours to add.')
        hours = body["hours"]
        if isinstance(hours, bool) or not isinstance(hours, int | float):
            raise ServiceError(400, '"hours" must be a number, e.g. {"hours": 1}.')
        lifetime = await self._json("POST", f"{self.env.lifetimes_api}/{self._server_path()}/extend",
                                    {"hours": hours})
        lifetime.pop("accelerator", None)
        return _with_warning_text(lifetime)

    # -- jobs and Dask clusters ---------------------------------------------------------------------------------

    def _jobs_api(self) -> str:
        if not self.env.jobs_api:
            raise ServiceError(404, "This facility has no jobs service.")
        return self.env.jobs_api

    @staticmethod
    def _job(name: str) -> str:
        if not JOB_NAME.match(name):
            raise ServiceError(400, f"'{name[:80]}' is not a job name (lower-case letters, digits, '-' and '.').")
        return quote(name, safe="")

    async def jobs(self) -> dict[str, Any]:
        jobs = await self._json("GET", f"{self._jobs_api()}/jobs")
        clusters, clusters_error = await self.dask_clusters()
        return {"jobs": jobs.get("jobs", []), "clusters": clusters, "clusters_error": clusters_error}

    async def job(self, name: str) -> dict[str, Any]:
        return await self._json("GET", f"{self._jobs_api()}/jobs/{self._job(name)}")

    async def cancel(self, name: str) -> None:
        await self._call("DELETE", f"{self._jobs_api()}/jobs/{self._job(name)}")

    async def logs(self, name: str) -> str:
        return (await self._call("GET", f"{self._jobs_api()}/jobs/{self._job(name)}/logs")).decode(errors="replace")

    async def options(self) -> dict[str, Any]:
        """What the submit form offers: the jobs service's answer, its accelerators (per group there) as one list;
        a group that may not use the chosen one is refused at submission with the reason."""
        if not self.env.jobs_api:
            return {"groups": [], "offload": [], "accelerators": []}
        found = await self._json("GET", f"{self.env.jobs_api}/options")
        per_group = found.get("accelerators") or {}
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for accels in per_group.values() if isinstance(per_group, dict) else []:
            for a in accels:
                seen.setdefault((a["kind"], a["name"]), a)
        return {**found, "accelerators": list(seen.values()), "accelerators_by_group": per_group}

    async def submit(self, body: Any) -> dict[str, Any]:
        """A JobRequest from the sidebar: a notebook path as JupyterLab names it (relative to the server's root)
        becomes the path in the home that the jobs service wants; the session's IAM token goes along as the CLI
        sends it (the job's BEARER_TOKEN_FILE)."""
        if not isinstance(body, dict):
            raise ServiceError(400, 'The body must be a JSON object, e.g. {"notebook": "fit.ipynb"}.')
        body = dict(body)
        if "token" in body:
            raise ServiceError(400, '"token" is not yours to send: the session\'s own token goes with the job.')
        notebook = body.get("notebook")
        if notebook is not None:
            if not isinstance(notebook, str) or not notebook or len(notebook) > 1024:
                raise ServiceError(400, '"notebook" must be the path of a notebook, as the file browser shows it.')
            body["notebook"] = self.home_relative(notebook)
        token = self._iam_token()
        if token:
            body["token"] = token
        return await self._json("POST", f"{self._jobs_api()}/jobs", body)

    def home_relative(self, path: str) -> str:
        full = (self.root_dir / posixpath.normpath(path.lstrip("/"))).resolve()
        try:
            return str(full.relative_to(self.env.home.resolve()))
        except ValueError:
            raise ServiceError(400, f"{path[:200]} is not in your home directory: jobs see only your home and "
                                    "group directories.") from None

    def _iam_token(self) -> str | None:
        path = self.env.token_file
        if not path or not os.path.exists(path):
            return None
        return Path(path).read_text().strip() or None

    async def dask_clusters(self) -> tuple[list[dict[str, Any]], str | None]:
        """The user's Dask clusters, from the gateway (dask-gateway's own client, the session's token)."""
        if not os.environ.get("DASK_GATEWAY__ADDRESS"):
            return [], None
        from dask_gateway import Gateway  # imported here: a session without Dask still shows its jobs

        try:
            async with Gateway(asynchronous=True) as gateway:
                reports = await gateway.list_clusters()
        except Exception as e:  # the gateway down must not hide the jobs: say so beside them
            return [], f"The Dask gateway did not answer ({type(e).__name__}); your clusters are not listed."
        return [{"name": r.name, "status": r.status.name, "workers": None, "dashboard": r.dashboard_link,
                 "started": r.start_time.isoformat() if r.start_time else None} for r in reports], None

    # -- HTTP ---------------------------------------------------------------------------------------------------

    async def _json(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        raw = await self._call(method, url, body)
        try:
            value = json.loads(raw or b"{}")
        except ValueError:
            raise ServiceError(502, "A facility service answered something that is not JSON; try again.") from None
        return value if isinstance(value, dict) else {}

    async def _call(self, method: str, url: str, body: Any = None) -> bytes:
        if not self.env.token:
            raise ServiceError(503, "This is not a JupyterHub session (no JUPYTERHUB_API_TOKEN).")
        request = HTTPRequest(url, method=method, request_timeout=TIMEOUT,
                              headers={"Authorization": f"token {self.env.token}",
                                       "Content-Type": "application/json"},
                              body=json.dumps(body) if body is not None else (b"" if method == "POST" else None))
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            raise ServiceError(*_refusal(e)) from None
        except OSError as e:
            raise ServiceError(502, f"A facility service could not be reached ({e.strerror or e}); "
                                    "try again.") from None
        return bytes(response.body or b"")


def _with_warning_text(lifetime: dict[str, Any]) -> dict[str, Any]:
    """The lifetimes service flags the warning window (`warning`: true); the page shows the sentence."""
    return {**lifetime, "warning": lifetime.get("message") if lifetime.get("warning") else None}


def _refusal(e: HTTPClientError) -> tuple[int, str]:
    """The service's own status and message ({"status", "message"}, JupyterHub's convention) when it gave one."""
    message = ""
    if e.response is not None and e.response.body:
        try:
            message = str(json.loads(e.response.body).get("message", ""))[:2000]
        except (ValueError, AttributeError):
            message = ""
    if e.code >= 500 or e.code == 599:
        return 502, message or f"A facility service failed ({e.code}); try again in a moment."
    return e.code, message or f"The facility refused the request ({e.code})."
