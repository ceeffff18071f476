"""REST API of the jobs service (under /services/jobs/api/), in JupyterHub's service conventions.

Authentication is JupyterHub's: the session's own token (`JUPYTERHUB_API_TOKEN`) or any token of the user with
`access:services!service=jobs`. Authorisation by custom scopes with the usual user filter, on every request:
`custom:jobs:read!user=<owner>` to list, read and follow, `custom:jobs:write!user=<owner>` to submit and cancel.
Every user holds both for themselves, admins for everyone. Another user's job answers 403.

    POST   api/jobs                 submit (body: request.JobRequest, plus "token": the session's IAM token)
    GET    api/jobs                 your jobs (admins: ?user=NAME, or ?all=1)
    GET    api/jobs/<name>          one job: phase, queue position, admitted flavor, node and site, exit code
    GET    api/jobs/<name>/logs     its output (text; ?follow=1 streams until the job ends)
    GET    api/options              what a submission form offers you: groups, offload targets, accelerators
    DELETE api/jobs/<name>          cancel (the Job, its pod and token Secret are deleted)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError
from tornado import web
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError

from aifacility.facility.model import Facility
from aifacility.hubapi import HubClient
from aifacility.hubservice import error_text, fail
from aifacility.jobs.cluster import JobsCluster
from aifacility.jobs.manifest import CONTAINER, job_manifest, new_job_name
from aifacility.jobs.policy import JobPlan, JobRefused, options, plan
from aifacility.jobs.request import JobRequest, readable
from aifacility.jobs.status import admission, describe, owner, phase
from aifacility.quotas.budgets import BudgetBook
from aifacility.quotas.policy import effective
from aifacility.quotas.store import PolicyStore

READ = "custom:jobs:read"
WRITE = "custom:jobs:write"
MAX_BODY_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 16 * 1024


class APIHandler(HubOAuthenticated, web.RequestHandler):
    """JSON in, JSON out; errors as {"status", "message"} like the hub's own API, never a traceback."""

    @property
    def facility(self) -> Facility:
        return self.settings["facility"]

    async def facility_in_force(self) -> Facility:
        """The facility with the admin service's policies applied, read at each submission: a quota an admin
        changed applies to the next job without a restart."""
        store: PolicyStore | None = self.settings.get("policies")
        if store is None:
            return self.facility
        return effective(self.facility, await asyncio.to_thread(store.snapshot))

    async def within_budgets(self, me: str, job_plan: JobPlan) -> None:
        """403 when a used-up budget (the user's, or the charged group's) closes this job: every new job under
        `hold` and `stop`, accelerator jobs under `cpu-only` (see aifacility.quotas.policy.Budget)."""
        store: PolicyStore | None = self.settings.get("policies")
        if store is None:
            return
        for state in await asyncio.to_thread(BudgetBook(store.engine).exhausted, me, [job_plan.group]):
            if state.on_exhausted in ("hold", "stop"):
                raise fail(403, state.refusal("new jobs"))
            if job_plan.accelerator is not None:
                raise fail(403, state.refusal("accelerator jobs"))

    @property
    def cluster(self) -> JobsCluster:
        return self.settings["cluster"]

    @property
    def hub(self) -> HubClient:
        return self.settings["hub"]

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API calls need no XSRF check (as the hub's own API)."""

    def who(self) -> dict[str, Any]:
        user = self.current_user
        if not user:
            raise fail(403, "Missing or invalid credentials: send your JupyterHub token "
                            "(in a session: $JUPYTERHUB_API_TOKEN).")
        return user

    def may(self, scope: str, owner_name: str) -> bool:
        return bool(self.hub_auth.check_scopes(f"{scope}!user={owner_name}", self.who()))

    def is_admin(self) -> bool:
        return READ in (self.who().get("scopes") or []) or WRITE in (self.who().get("scopes") or [])

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = error_text(exc, status_code)
        if status_code >= 500 and status_code not in (502, 503):
            message = "The jobs service failed on this request; the administrators can find why in its log."
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def write_json(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    async def groups(self, user: str) -> list[str]:
        """The user's groups: from their identity when their token may read them (the session's token may: see
        config.py; cached by HubAuth for `cache_max_age`), else asked of the hub."""
        model = self.who()
        if model.get("name") == user and isinstance(model.get("groups"), list):
            return sorted(model["groups"])
        try:
            found = await self.hub.user(user)
        except (HTTPClientError, OSError) as e:
            raise fail(502, f"The hub did not answer about your groups ({e}); try again.") from None
        return sorted((found or {}).get("groups") or [])

    async def owned_job(self, name: str, scope: str) -> dict[str, Any]:
        """The job, if it exists and the caller may act on it with `scope` (404 / 403 otherwise)."""
        try:
            job = await self.cluster.job(name)
        except ApiException as e:
            raise fail(503, f"The cluster did not answer ({e.status} {e.reason}); try again.") from None
        if job is None:
            raise fail(404, f"There is no job '{name[:100]}'. `aifacility jobs list` shows yours.")
        if not self.may(scope, owner(job)):
            raise fail(403, f"Job '{name}' is not yours.")
        return job

    async def model(self, job: dict[str, Any]) -> dict[str, Any]:
        try:
            pod = await self.cluster.pod(job)
            workload = await self.cluster.workload(job)
            position = None
            if not (workload or {}).get("status", {}).get("admission") and job["metadata"]["labels"].get(
                    "kueue.x-k8s.io/queue-name"):
                queue = job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
                positions = await self.cluster.positions(queue)
                position = next((p for p in positions if p.owner_kind == "Job"
                                 and p.owner_name == job["metadata"]["name"]), None)
            sites = await self.cluster.sites()
            adm = admission(workload)
            cq = None
            if adm and phase(job, pod, workload) in ("Starting", "Running"):
                cq = await self.cluster.cluster_queue(adm["cluster_queue"])
        except ApiException as e:
            raise fail(503, f"The cluster did not answer ({e.status} {e.reason}); try again.") from None
        return describe(job, pod, workload, position, sites, cq)


class JobsAPI(APIHandler):
    async def get(self) -> None:
        me = self.who()["name"]
        user: str | None = self.get_argument("user", me)
        if self.get_argument("all", "") in ("1", "true"):
            if not self.is_admin():
                raise fail(403, "Only administrators may list everyone's jobs.")
            user = None
        elif user != me and not self.may(READ, str(user)):
            raise fail(403, f"You may not list the jobs of {str(user)[:100]}.")
        try:
            jobs = await self.cluster.jobs(user)
        except ApiException as e:
            raise fail(503, f"The cluster did not answer ({e.status} {e.reason}); try again.") from None
        if user is not None:
            jobs = [j for j in jobs if owner(j) == user]
        self.write_json({"jobs": [await self.model(j) for j in jobs]})

    async def post(self) -> None:
        me = self.who()["name"]
        if not self.may(WRITE, me):
            raise fail(403, "You may not submit jobs.")
        if len(self.request.body) > MAX_BODY_BYTES:
            raise fail(413, f"The request is {len(self.request.body)} bytes; at most {MAX_BODY_BYTES} are accepted.")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):
            raise fail(400, "The body must be a JSON object describing the job.") from None
        if not isinstance(body, dict):
            raise fail(400, 'The body must be a JSON object, e.g. {"command": ["python", "run.py"]}.')
        token = body.pop("token", None)
        if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS):
            raise fail(400, f'"token" must be the session\'s access token (a string of at most {MAX_TOKEN_CHARS} '
                            "characters).")
        try:
            req = JobRequest.model_validate(body)
        except ValidationError as e:
            raise fail(400, f"Invalid job: {readable(e)}.") from None
        groups = await self.groups(me)
        name = new_job_name(me)
        try:
            job_plan = plan(await self.facility_in_force(), me, groups, req, name)
        except JobRefused as e:
            raise fail(400, str(e)) from None
        await self.within_budgets(me, job_plan)
        try:
            active = await self.cluster.unfinished(me)
            limit = self.facility.jobs.max_active_per_user
            if active >= limit:
                raise fail(429, f"You have {active} jobs that have not finished; at most {limit} may wait or "
                                "run at once. Cancel some or wait for them to end.")
            parts = job_manifest(self.facility, job_plan, name, groups, dict(req.parameters), token,
                                 request=req.model_dump(mode="json", exclude_none=True, exclude_defaults=True))
            await self.cluster.ensure_storage(me, groups)
            created = await self.cluster.create(parts["job"], parts["secret"])
        except ApiException as e:
            if e.status in (400, 403, 422):
                # The API server or an admission webhook (Kueue, Pod Security) refused it: its words help.
                raise fail(400, f"The cluster refused the job: {_api_message(e)}") from None
            raise fail(503, f"The cluster did not answer ({e.status} {e.reason}); try again.") from None
        # A new job is queued: its model needs no further reads (`status` shows its position a moment later).
        self.write_json(describe(created, None, None, None, {}), status=201)


class OptionsAPI(APIHandler):
    """GET api/options: what a submission form offers you (your groups, offload targets, each group's
    accelerators); what it leaves out is refused at submission anyway."""

    async def get(self) -> None:
        me = self.who()["name"]
        if not self.may(READ, me):
            raise fail(403, "You may not use the jobs service.")
        self.write_json(options(await self.facility_in_force(), await self.groups(me)))


class JobAPI(APIHandler):
    async def get(self, name: str) -> None:
        self.write_json(await self.model(await self.owned_job(name, READ)))

    async def delete(self, name: str) -> None:
        job = await self.owned_job(name, WRITE)
        try:
            await self.cluster.delete(job["metadata"]["name"])
        except ApiException as e:
            raise fail(503, f"The cluster did not answer ({e.status} {e.reason}); try again.") from None
        self.set_status(204)
        self.finish()


class LogsAPI(APIHandler):
    async def get(self, name: str) -> None:
        job = await self.owned_job(name, READ)
        follow = self.get_argument("follow", "") in ("1", "true")
        try:
            pod = await self.cluster.pod(job)
        except ApiException as e:
            raise fail(503, f"The cluster did not answer ({e.status} {e.reason}); try again.") from None
        if pod is None or not (pod.get("spec") or {}).get("nodeName"):
            state = phase(job, pod, None)
            raise fail(409, f"Job '{name}' has no output yet: it is {state.lower()}. "
                            "`aifacility jobs status` says where it stands.")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        try:
            async for chunk in self.cluster.logs(pod["metadata"]["name"], CONTAINER, follow):
                self.write(chunk)
                await self.flush()
        except ApiException as e:
            if not self._headers_written:
                raise fail(409, f"The output of job '{name}' cannot be read yet: {_api_message(e)}") from None
        except StreamClosedError:
            return  # the reader went away
        self.finish()


def _api_message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or b"{}").get("message", ""))[:500] or str(e.reason)
    except (ValueError, TypeError, AttributeError):
        return str(e.reason)
