"""Handlers of the admin service: web pages under /services/admin/ and the REST API under .../api/.

Who asks is JupyterHub's answer (`HubOAuthenticated`: the service's OAuth cookie in a browser, a token in
`Authorization` for the API and the CLI). Reaching the service at all needs `access:services!service=admin`;
reading policies needs READ, changing them WRITE (both custom scopes: see admin/config.py). A browser's form
posts carry JupyterHub's XSRF token; token-authenticated API calls need none.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import jinja2
from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from aifacility.admin.policies import PolicyError, PolicyService, UnknownName, check_name
from aifacility.admin.queues import QueueSyncError
from aifacility.hubservice import error_text, fail
from aifacility.quotas.policy import MAX_UNITS, Scope

READ = "custom:policies:read"
WRITE = "custom:policies:write"
MAX_BODY_BYTES = 64 * 1024
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("aifacility.admin", "templates"), autoescape=True)
TEMPLATES.filters["utc"] = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
NAME = r"(?P<name>[^/]{1,200})"


class Base(HubOAuthenticated, web.RequestHandler):
    api = False  # answers in JSON (else HTML pages)

    @property
    def service(self) -> PolicyService:
        return self.settings["policies"]

    def who(self, scope: str = READ) -> str:
        user = self.current_user
        if not user:
            # No identity, or one without access to this service: the hub grants that to administrators only.
            raise fail(403, "Only the facility's administrators may use the admin service: sign in as one, or "
                            "send an administrator's JupyterHub token.")
        if not self.hub_auth.check_scopes(scope, user):
            raise fail(403, f"{user.get('name')} may not {'change' if scope == WRITE else 'read'} the facility's "
                            "policies: ask the facility's administrators.")
        return str(user["name"])

    def scope_of(self, kind: str) -> Scope:
        return "group" if kind == "groups" else "user"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = error_text(exc, status_code)
        if status_code >= 500 and status_code not in (502, 503):
            message = "The admin service failed on this request; the administrators can find why in its log."
        if self.api:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "message": message}))
        else:
            self.finish(TEMPLATES.get_template("error.html").render(status=status_code, message=message,
                                                                    prefix=self.settings["prefix"]))

    def page(self, name: str, **kw: Any) -> None:
        self.finish(TEMPLATES.get_template(name).render(prefix=self.settings["prefix"], xsrf=self.xsrf_token.decode(),
                                                         me=self.current_user["name"], **kw))

    async def change(self, scope: Scope, name: str, body: Any, actor: str) -> Any:
        try:
            return await self.service.set(scope, name, body, actor)
        except UnknownName as e:
            raise fail(404 if self.request.method == "DELETE" else 400, str(e)) from None
        except PolicyError as e:
            raise fail(400, str(e)) from None
        except QueueSyncError as e:
            raise fail(502, f"Not saved: {e}.") from None


class APIBase(Base):
    """No redirect to the login page: a call without credentials gets 403 in JSON, as from the hub's own API."""

    api = True

    def write_json(self, data: object) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def body(self) -> Any:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise fail(413, f"The body is {len(self.request.body)} bytes; at most {MAX_BODY_BYTES} are accepted.")
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError:
            raise fail(400, 'The body must be JSON, e.g. {"servers": 2, "accelerators": {"t4": 1}}.') from None


class PoliciesAPI(APIBase):
    """GET .../api/policies: every group's and user's policy, the file's values and those in force."""

    async def get(self) -> None:
        self.who()
        self.write_json(await self.service.overview())


class PolicyAPI(APIBase):
    """GET/PUT/DELETE .../api/(groups|users)/<name>: one policy. PUT replaces it ({} removes it); DELETE removes
    it (the facility file's values apply again)."""

    def target(self, kind: str, name: str) -> tuple[Scope, str]:
        scope = self.scope_of(kind)
        try:
            return scope, check_name(scope, name)
        except PolicyError as e:
            raise fail(400, str(e)) from None

    async def get(self, kind: str, name: str) -> None:
        self.who()
        scope, name = self.target(kind, name)
        if not await self.service.known(scope, name):
            raise fail(404, f"There is no {scope} '{name}' at the hub or in the facility file.")
        self.write_json(self.service.view(scope, name, await self.service.snapshot()))

    async def put(self, kind: str, name: str) -> None:
        me = self.who(WRITE)
        scope, name = self.target(kind, name)
        change = await self.change(scope, name, self.body(), me)
        self.write_json({**self.service.view(scope, name, await self.service.snapshot()),
                         "change": change.as_json() if change else None})

    async def delete(self, kind: str, name: str) -> None:
        me = self.who(WRITE)
        scope, name = self.target(kind, name)
        await self.change(scope, name, {}, me)
        self.set_status(204)
        self.finish()


class BudgetsAPI(APIBase):
    """GET .../api/budgets: where every budget stood at the last check, and the budget keeper's latest steps."""

    async def get(self) -> None:
        self.who()
        self.write_json(await self.service.budget_report())


class AuditAPI(APIBase):
    """GET .../api/audit[?limit=N&scope=group|user&name=X]: the latest changes first."""

    async def get(self) -> None:
        self.who()
        self.write_json([c.as_json() for c in await self.service.audit(*audit_query(self))])


def audit_query(h: web.RequestHandler) -> tuple[int, str | None, str | None]:
    text = h.get_argument("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise fail(400, f"limit={text[:20]!r} must be a whole number from 1 to 1000.")
    scope = h.get_argument("scope", None)
    if scope not in (None, "group", "user"):
        raise fail(400, f"scope={str(scope)[:20]!r} must be group or user.")
    name = h.get_argument("name", None)
    return int(text), scope, name[:200] if name else None


# --- web pages -----------------------------------------------------------------------------------------------


class OverviewPage(Base):
    """GET /services/admin/: every group's limits and queue quota, users with a policy, the latest changes."""

    @web.authenticated
    async def get(self) -> None:
        self.who()
        self.page("overview.html", overview=await self.service.overview(), audit=await self.service.audit(30),
                  budgets=await self.service.budget_report(30), accelerators=self.service.facility.accelerators)


class UserLookupPage(Base):
    """GET .../users?name=X: the overview's "edit a user" form goes to that user's page."""

    @web.authenticated
    def get(self) -> None:
        self.who()
        name = self.get_argument("name", "").strip()
        try:
            check_name("user", name)
        except PolicyError as e:
            raise fail(400, str(e)) from None
        self.redirect(f"{self.settings['prefix']}users/{name}")


class PolicyPage(Base):
    """GET/POST .../(groups|users)/<name>: a form with every limit; empty fields keep the facility file's."""

    async def show(self, scope: Scope, name: str, form: dict[str, str] | None = None, error: str = "",
                   saved: bool = False) -> None:
        view = self.service.view(scope, name, await self.service.snapshot())
        self.page("policy.html", view=view, form=form or form_values(view["policy"]), error=error, saved=saved,
                  accelerators=self.service.facility.accelerators,
                  audit=await self.service.audit(20, scope, name))

    @web.authenticated
    async def get(self, kind: str, name: str) -> None:
        self.who()
        scope = self.scope_of(kind)
        try:
            check_name(scope, name)
        except PolicyError as e:
            raise fail(400, str(e)) from None
        if not await self.service.known(scope, name):
            raise fail(404, f"There is no {scope} '{name}' at the hub or in the facility file.")
        await self.show(scope, name, saved=self.get_argument("saved", "") == "1")

    @web.authenticated
    async def post(self, kind: str, name: str) -> None:
        me = self.who(WRITE)
        scope = self.scope_of(kind)
        form = {k: self.get_body_argument(k, "").strip()[:64] for k in self.request.body_arguments if k != "_xsrf"}
        try:
            body = form_body(scope, form)
            await self.service.set(scope, name, body, me)
        except PolicyError as e:  # shown on the form, with what was typed
            self.set_status(404 if isinstance(e, UnknownName) else 400)
            await self.show(scope, name, form, error=str(e))
            return
        except QueueSyncError as e:
            self.set_status(502)
            await self.show(scope, name, form, error=f"Not saved: {e}.")
            return
        self.redirect(f"{self.settings['prefix']}{kind}/{name}?saved=1")


def form_values(policy: dict[str, Any]) -> dict[str, str]:
    """A stored policy as the form's fields."""
    out = {k: ("" if v is None else str(v)) for k, v in policy.items() if not isinstance(v, (dict, bool))}
    out.update({f"acc:{a}": str(n) for a, n in policy.get("accelerators", {}).items()})
    out.update({f"qacc:{a}": str(n) for a, n in policy.get("queue_accelerators", {}).items()})
    if "borrowing" in policy:
        out["borrowing"] = "yes" if policy["borrowing"] else "no"
    for key, value in (policy.get("budget") or {}).items():
        out[f"budget_{key}"] = f"{value:g}" if isinstance(value, float) else str(value)
    return out


def _count(field: str, text: str) -> int:
    if not text.lstrip("-").isdigit():
        raise PolicyError(f"{field}: '{text}' is not a whole number.")
    value = int(text)
    if not 0 <= value <= MAX_UNITS:
        raise PolicyError(f"{field}: {value} must be from 0 to {MAX_UNITS}.")
    return value


BUDGET_NUMBERS = ("budget_gpu_hours", "budget_cpu_hours", "budget_grace_minutes")
BUDGET_FIELDS = (*BUDGET_NUMBERS, "budget_period", "budget_on_exhausted")


def _hours(field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PolicyError(f"{field.replace('_', ' ', 1)}: '{text}' is not a number.") from None
    if not math.isfinite(value) or value < 0:
        raise PolicyError(f"{field.replace('_', ' ', 1)}: {text} must be 0 or more.")
    return value


def form_body(scope: Scope, form: dict[str, str]) -> dict[str, Any]:
    """The form's fields as a policy body (empty fields: not part of the policy)."""
    body: dict[str, Any] = {}
    if not any(form.get(k) for k in ("budget_gpu_hours", "budget_cpu_hours")):
        form = {k: v for k, v in form.items() if k not in BUDGET_FIELDS}  # no hours: no budget (the selects stay)
    for key, text in form.items():
        if not text:
            continue
        if key == "servers":
            body["servers"] = _count("servers", text)
        elif key.startswith("acc:"):
            body.setdefault("accelerators", {})[key[4:]] = _count(f"accelerators.{key[4:]}", text)
        elif scope == "group" and key.startswith("qacc:"):
            body.setdefault("queue_accelerators", {})[key[5:]] = _count(f"queue_accelerators.{key[5:]}", text)
        elif key in BUDGET_FIELDS:
            budget = body.setdefault("budget", {})
            budget[key.removeprefix("budget_")] = _hours(key, text) if key in BUDGET_NUMBERS else text
        elif scope == "group" and key in ("queue_cpu", "queue_memory"):
            body[key] = text
        elif scope == "group" and key == "borrowing":
            if text not in ("yes", "no"):
                raise PolicyError("borrowing: choose yes, no, or the facility file's setting.")
            body["borrowing"] = text == "yes"
        else:
            raise PolicyError(f"'{key[:40]}' is not a field of a {scope} policy.")
    return body
