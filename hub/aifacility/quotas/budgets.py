"""Budgets: where each stands in its period, from the accounting ledger, and what has been done about it.

The admin service's budget keeper (aifacility.admin.budgets) computes `standing` every check and records it in
`budget_state` with every step it takes in `budget_events`. Everyone else reads those tables: the spawner and
the jobs service (`BudgetBook.exhausted`: what to refuse), the hub's home page and the sessions (`notices`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, or_, select, update

from aifacility.accounting import report
from aifacility.facility.model import Accounting
from aifacility.quotas.policy import Budget
from aifacility.quotas.schema import budget_events, budget_state

WARN_PERCENT = 80.0
PERIOD_WORDS = {"day": "today", "week": "this week", "month": "this month"}


def period_start(period: str, now: datetime) -> datetime:
    """The start (UTC) of the day, ISO week (Monday) or month that `now` is in."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: str, start: datetime) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Spent:
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0


def spent(conn: Connection, scope: str, name: str, start: datetime, now: datetime, settings: Accounting) -> Spent:
    """GPU-equivalent hours and CPU core-hours of a group or user from `start` to `now` (open records count up to
    `now`)."""
    if scope == "user":
        rep = report.build(conn, "user", start, now, settings, now=now, user=name)
    else:
        rep = report.build(conn, "group", start, now, settings, now=now)
    rows = [r for r in rep.rows if r.key == name]
    return Spent(gpu_hours=sum(r.gpu_equivalent_hours for r in rows),
                 cpu_hours=sum(r.hours for r in rows if r.resource == "cpu"))


@dataclass(frozen=True)
class Standing:
    percent: float
    level: str  # ok | warned | exhausted
    detail: str  # "12.5 of 10 GPU-hours today"


def standing(budget: Budget, used: Spent) -> Standing:
    parts = []
    for limit, value, unit in ((budget.gpu_hours, used.gpu_hours, "GPU-hours"),
                               (budget.cpu_hours, used.cpu_hours, "CPU core-hours")):
        if limit is None:
            continue
        pct = 100.0 if limit == 0 else 100.0 * value / limit
        parts.append((pct, f"{value:.3g} of {limit:g} {unit}"))
    percent, detail = max(parts) if parts else (0.0, "")
    level = "exhausted" if percent >= 100 else "warned" if percent >= WARN_PERCENT else "ok"
    return Standing(percent if math.isfinite(percent) else 100.0, level, f"{detail} {PERIOD_WORDS[budget.period]}")


@dataclass
class BudgetState:
    scope: str
    name: str
    period_start: float
    level: str
    since: float
    percent: float
    detail: str
    on_exhausted: str
    held: dict[str, Any] = field(default_factory=dict)
    checked_at: float = 0.0
    stop_at: float | None = None  # `stop`: when accelerator sessions are stopped

    @property
    def subject(self) -> str:
        return f"group {self.name}'s" if self.scope == "group" else "your"

    def refusal(self, what: str) -> str:
        """Why `what` ("accelerator sessions", "new jobs") is refused while this budget is used up."""
        scope = f"group '{self.name}'" if self.scope == "group" else self.name
        return (f"The budget of {scope} is used up ({self.detail}): {what} are closed until an administrator raises it "
                "or the period ends. CPU-only profiles still start.")


def _state(row: Any) -> BudgetState:
    return BudgetState(row.scope, row.name, row.period_start, row.level, row.since, row.percent, row.detail,
                       row.on_exhausted, json.loads(row.held), row.checked_at, row.stop_at)


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    scope: str
    name: str
    user: str | None
    action: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "scope": self.scope, "name": self.name, "user": self.user,
                "action": self.action, "message": self.message}


class BudgetBook:
    """The budget tables of the policy database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def states(self) -> list[BudgetState]:
        with self.engine.connect() as conn:
            return [_state(r) for r in conn.execute(select(budget_state))]

    def save(self, state: BudgetState) -> None:
        values = {"period_start": state.period_start, "level": state.level, "since": state.since,
                  "percent": state.percent, "detail": state.detail, "on_exhausted": state.on_exhausted,
                  "held": json.dumps(state.held, sort_keys=True), "checked_at": state.checked_at,
                  "stop_at": state.stop_at}
        key = (budget_state.c.scope == state.scope) & (budget_state.c.name == state.name)
        with self.engine.begin() as conn:
            if conn.execute(update(budget_state).where(key).values(**values)).rowcount == 0:
                conn.execute(budget_state.insert().values(scope=state.scope, name=state.name, **values))

    def forget(self, scope: str, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(budget_state).where((budget_state.c.scope == scope) & (budget_state.c.name == name)))

    def log(self, at: float, scope: str, name: str, action: str, message: str, user: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(budget_events.insert().values(at=at, scope=scope, name=name, user_name=user, action=action,
                                                       message=message))

    def events(self, limit: int = 100, user: str | None = None, groups: list[str] | None = None,
               since: float = 0.0) -> list[Event]:
        """The latest first; with `user`: the steps that concern that user (theirs, and their groups' own)."""
        q = select(budget_events).where(budget_events.c.at >= since).order_by(budget_events.c.id.desc()).limit(limit)
        if user is not None:
            q = q.where(or_((budget_events.c.scope == "user") & (budget_events.c.name == user),
                            budget_events.c.user_name == user,
                            (budget_events.c.scope == "group") & budget_events.c.name.in_(groups or [])
                            & budget_events.c.user_name.is_(None)))
        with self.engine.connect() as conn:
            return [Event(r.id, r.at, r.scope, r.name, r.user_name, r.action, r.message) for r in conn.execute(q)]

    def concerning(self, user: str, groups: list[str]) -> list[BudgetState]:
        """The budgets over `user`: their own, and their groups'."""
        q = select(budget_state).where(or_((budget_state.c.scope == "user") & (budget_state.c.name == user),
                                           (budget_state.c.scope == "group") & budget_state.c.name.in_(groups)))
        with self.engine.connect() as conn:
            return [_state(r) for r in conn.execute(q)]

    def exhausted(self, user: str, groups: list[str]) -> list[BudgetState]:
        return [s for s in self.concerning(user, groups) if s.level == "exhausted"]


def notices(book: BudgetBook, user: str, groups: list[str], now: float, days: float = 7) -> dict[str, Any]:
    """What a user is told: the budgets over them at 80% or more (`budgets`), every budget over them and how much
    of it is used (`use`, for the session's status bar), and the keeper's steps of the last `days`."""
    states = book.concerning(user, groups)
    use = [{"scope": s.scope, "name": s.name, "level": s.level, "percent": round(s.percent, 1),
            "message": describe(s)} for s in states]
    events = [e.as_json() for e in book.events(20, user, groups, since=now - days * 86400)]
    return {"budgets": [b for b in use if b["level"] != "ok"], "use": use, "events": events}


def describe(s: BudgetState, you: bool = True) -> str:
    """Where a budget stands and, at 100%, what follows, for its users (`you`) or for the record."""
    who = f"Group {s.name}" if s.scope == "group" else "You" if you else s.name
    if s.level in ("ok", "warned"):
        return f"{who} used {s.percent:.0f}% of the budget ({s.detail})."
    stop = "accelerator sessions are stopped"
    if s.stop_at is not None:
        stop += f" from {datetime.fromtimestamp(s.stop_at, UTC).strftime('%H:%M UTC')} (save your work)"
    then = {"cpu-only": "accelerator sessions and jobs are closed",
            "hold": "accelerator sessions and new jobs are closed and queued jobs are held",
            "stop": f"{stop}, new jobs are closed and queued jobs are held"}[s.on_exhausted]
    return f"{who} used the whole budget ({s.detail}): {then} until an administrator raises it or the period ends."
