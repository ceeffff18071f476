"""Handlers of the usage service. Who asks is JupyterHub's answer (`HubOAuthenticated`: the service's OAuth
cookie in a browser, or a token in `Authorization`); a user sees only their own records, whatever the URL
says, and the facility-wide report needs the hub's admin flag, asked of the hub with the service's token."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web
from tornado.httpclient import HTTPClientError

from aifacility.accounting import render, report
from aifacility.accounting.ledger import Ledger
from aifacility.facility.model import Accounting
from aifacility.hubservice import error_text, fail
from aifacility.quotas.budgets import notices

FORMATS = ("html", "csv", "json")


def _day(text: str, what: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    except ValueError:
        raise fail(400, f"{what}={text[:40]!r} is not a date (YYYY-MM-DD).") from None


class Base(HubOAuthenticated, web.RequestHandler):
    @property
    def ledger(self) -> Ledger:
        return self.settings["ledger"]

    @property
    def accounting(self) -> Accounting:
        return self.settings["accounting"]

    def who(self) -> str:
        user = self.current_user
        if not user:
            raise fail(403, "Missing or invalid credentials.")
        return str(user["name"])

    def period(self) -> tuple[datetime, datetime]:
        """?from=YYYY-MM-DD&to=YYYY-MM-DD (to exclusive); default: this month so far, today included."""
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = _day(self.get_argument("from"), "from") if self.get_argument("from", "") else today.replace(day=1)
        end = _day(self.get_argument("to"), "to") if self.get_argument("to", "") else today + timedelta(days=1)
        try:
            report.check_period(start, end)
        except report.ReportError as e:
            raise fail(400, str(e).replace("--to", "to").replace("--from", "from")) from None
        return start, end

    def fmt(self) -> str:
        f = self.get_argument("format", "html")
        if f not in FORMATS:
            raise fail(400, f"format={f[:20]!r} is not one of {', '.join(FORMATS)}.")
        return f

    def answer(self, rep: report.Report, fmt: str, title: str, user: str | None) -> None:
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.finish(render.to_csv(rep))
        elif fmt == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(render.to_json(rep))
        else:
            with self.ledger.engine.connect() as conn:
                days = report.daily(conn, rep.start, rep.end, self.accounting, user=user)
                groups = report.build(conn, "group", rep.start, rep.end, self.accounting, user=user)
            self.finish(render.to_html(rep, render.plots(rep, days, groups), title=title))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = error_text(kwargs.get("exc_info", (None, None, None))[1], status_code)
        if status_code >= 500 and status_code != 502:
            message = "The usage service failed on this request; the administrators can find why in its log."
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))


class MyUsage(Base):
    """GET /services/usage/: the signed-in user's own usage, by resource (or ?by=group|site|model)."""

    @web.authenticated
    def get(self) -> None:
        user = self.who()
        by = self.get_argument("by", "resource")
        if by not in ("resource", "group", "site", "model"):
            raise fail(400, f"by={by[:20]!r} is not one of resource, group, site, model.")
        start, end = self.period()
        fmt = self.fmt()
        with self.ledger.engine.connect() as conn:
            rep = report.build(conn, by, start, end, self.accounting, user=user)
        self.answer(rep, fmt, f"Usage of {user} by {by}", user)


class FacilityReport(Base):
    """GET /services/usage/admin: everyone's usage by user, group, resource, site or model; hub admins only."""

    @web.authenticated
    async def get(self) -> None:
        user = self.who()
        if not await self.is_admin(user):
            raise fail(403, "Only the hub's administrators see the facility's usage; your own is at "
                            f"{self.settings['prefix']}.")
        by = self.get_argument("by", "group")
        if by not in report.BY:
            raise fail(400, f"by={by[:20]!r} is not one of {', '.join(report.BY)}.")
        start, end = self.period()
        fmt = self.fmt()
        with self.ledger.engine.connect() as conn:
            rep = report.build(conn, by, start, end, self.accounting)
        self.answer(rep, fmt, f"Facility usage by {by}", None)

    async def is_admin(self, user: str) -> bool:
        try:
            model = await self.settings["hub"].user(user)
        except (HTTPClientError, OSError) as e:
            raise fail(502, f"The hub did not answer who {user} is ({e}); try again.") from None
        return bool(model and model.get("admin"))


class MyBudgets(Base):
    """GET /services/usage/budgets: the budgets over the signed-in user at 80% or more (`budgets`), every budget
    over them with its share used (`use`), and the budget keeper's steps that concerned them (JSON; the session's
    JupyterLab extension reads it)."""

    async def get(self) -> None:
        user = self.who()
        self.set_header("Content-Type", "application/json")
        book = self.settings.get("budgets")
        if book is None:
            self.finish(json.dumps({"budgets": [], "use": [], "events": []}))
            return
        try:
            model = await self.settings["hub"].user(user)
        except (HTTPClientError, OSError) as e:
            raise fail(502, f"The hub did not answer who {user} is ({e}); try again.") from None
        groups = sorted((model or {}).get("groups") or [])
        self.finish(json.dumps(await asyncio.to_thread(notices, book, user, groups, time.time())))
