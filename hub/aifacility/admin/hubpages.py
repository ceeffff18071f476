"""The budgets on the hub's own pages: a `template_vars` callable, evaluated by the hub for the signed-in user.

It reads the policy database in the hub process (two small queries per page view of the home page); the
template `budget-notices.html` is included by the home page's template (lifetimes/templates/home.html)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from aifacility.quotas.budgets import BudgetBook, notices
from aifacility.quotas.store import policy_store

log = logging.getLogger("aifacility.admin")


class HubBudgets:
    """`c.JupyterHub.template_vars["aifacility_budgets"]`: {"budgets": [...], "events": [...]}."""

    def __init__(self, policy_db: str) -> None:
        self.policy_db = policy_db

    def __call__(self, user: Any) -> dict[str, Any]:
        empty: dict[str, Any] = {"budgets": [], "events": []}
        if user is None:
            return empty
        try:
            book = BudgetBook(policy_store(self.policy_db).engine)
            out = notices(book, user.name, sorted(g.name for g in user.groups), time.time())
        except SQLAlchemyError as e:  # a page without the notice is better than no page
            log.warning("Cannot read the budgets for %s: %s", user.name, e)
            return empty
        for event in out["events"]:
            event["when"] = datetime.fromtimestamp(event["at"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        return out
