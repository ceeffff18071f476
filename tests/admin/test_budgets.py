"""Budgets' arithmetic and records: periods, where a budget stands, what the ledger says was spent, and who is
told what."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UsageRecord
from aifacility.admin.service.handlers import form_body, form_values
from aifacility.facility.model import Accounting
from aifacility.quotas.budgets import BudgetBook, BudgetState, Spent, notices, period_end, period_start, spent, standing
from aifacility.quotas.policy import Budget, PolicyError, parse_policy
from aifacility.quotas.store import PolicyStore

NOW = datetime(2026, 12, 10, 15, 30, tzinfo=UTC)  # a Thursday


def test_periods_start_at_utc_midnight_monday_and_the_first() -> None:
    assert period_start("day", NOW) == datetime(2026, 12, 10, tzinfo=UTC)
    assert period_start("week", NOW) == datetime(2026, 12, 7, tzinfo=UTC)
    assert period_start("month", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("month", datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_end("week", datetime(2026, 12, 7, tzinfo=UTC)) == datetime(2026, 12, 14, tzinfo=UTC)


@pytest.mark.parametrize("budget, used, level, percent", [
    (Budget(gpu_hours=10), Spent(gpu_hours=7.9), "ok", 79.0),
    (Budget(gpu_hours=10), Spent(gpu_hours=8), "warned", 80.0),
    (Budget(gpu_hours=10, cpu_hours=100), Spent(gpu_hours=1, cpu_hours=100), "exhausted", 100.0),
    (Budget(gpu_hours=0), Spent(), "exhausted", 100.0),  # a zero budget: no GPU at all
    (Budget(cpu_hours=50), Spent(gpu_hours=99, cpu_hours=10), "ok", 20.0),  # GPUs not budgeted here
])
def test_a_budget_stands_at_its_most_used_part(budget: Budget, used: Spent, level: str, percent: float) -> None:
    st = standing(budget, used)
    assert (st.level, st.percent) == (level, pytest.approx(percent))


def test_spent_counts_gpu_equivalents_and_core_hours_open_records_up_to_now(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")

    def rec(id: str, user: str, resource: str, model: str, quantity: float, start: str, end: str | None) -> UsageRecord:
        return UsageRecord.model_validate({"id": id, "user": user, "group": "ml", "kind": "notebook",
                                           "resource": resource, "model": model, "quantity": quantity,
                                           "start": start, "end": end})

    ledger.ingest([
        rec("a", "alice", "gpu", "A30", 1, "2026-12-10T10:00:00Z", "2026-12-10T12:00:00Z"),       # 2 GPU-h
        rec("b", "alice", "mig", "3g.40gb", 1, "2026-12-10T08:00:00Z", None),                      # 7.5 h x 3/7
        rec("c", "alice", "cpu", "", 4, "2026-12-09T23:00:00Z", "2026-12-10T01:00:00Z"),          # 1 h today x 4
        rec("d", "bob", "gpu", "T4", 1, "2026-12-10T09:00:00Z", "2026-12-10T10:00:00Z"),
    ])
    with ledger.engine.connect() as conn:
        mine = spent(conn, "user", "alice", period_start("day", NOW), NOW, Accounting())
        group = spent(conn, "group", "ml", period_start("day", NOW), NOW, Accounting())
    assert mine.gpu_hours == pytest.approx(2 + 7.5 * 3 / 7) and mine.cpu_hours == pytest.approx(4)
    assert group.gpu_hours == pytest.approx(mine.gpu_hours + 1)


def test_users_are_told_only_about_their_own_and_their_groups_budgets(tmp_path: Path) -> None:
    book = BudgetBook(PolicyStore(f"sqlite:///{tmp_path / 'p.sqlite'}").engine)
    t = NOW.timestamp()
    for scope, name, level in [("user", "alice", "exhausted"), ("group", "ml", "warned"), ("group", "cms", "warned"),
                               ("user", "bob", "ok")]:
        book.save(BudgetState(scope, name, t, level, t, 100.0 if level == "exhausted" else 85.0,
                              "x of y GPU-hours this month", "hold", {}, t))
    book.log(t, "user", "alice", "exhausted", "alice has used the whole budget")
    book.log(t, "group", "ml", "warned", "Group ml has used 80%")
    book.log(t, "group", "ml", "stopped", "The t4 session carol's server was stopped", user="carol")
    book.log(t, "group", "cms", "warned", "Group cms has used 80%")
    told = notices(book, "alice", ["ml"], t)
    assert {(b["scope"], b["name"]) for b in told["budgets"]} == {("user", "alice"), ("group", "ml")}
    assert [e["message"] for e in told["events"]] == ["Group ml has used 80%", "alice has used the whole budget"]
    assert "carol" in notices(book, "carol", ["ml"], t)["events"][0]["message"]
    bob = notices(book, "bob", [], t)  # under 80%: not a notice, but the status bar shows how much is used
    assert (bob["budgets"], bob["events"]) == ([], [])
    assert [(u["scope"], u["name"], u["level"], u["percent"]) for u in bob["use"]] == [("user", "bob", "ok", 85.0)]
    assert bob["use"][0]["message"] == "You used 85% of the budget (x of y GPU-hours this month)."
    assert notices(book, "dave", [], t) == {"budgets": [], "use": [], "events": []}
    assert [s.name for s in book.exhausted("alice", ["ml"])] == ["alice"]
    assert "The budget of alice is used up (x of y GPU-hours this month): new jobs are closed" in \
        book.exhausted("alice", [])[0].refusal("new jobs")


def test_the_form_reads_and_writes_a_budget() -> None:
    body = form_body("user", {"budget_gpu_hours": "12.5", "budget_period": "week", "budget_on_exhausted": "stop",
                              "budget_grace_minutes": "", "servers": ""})
    assert body == {"budget": {"gpu_hours": 12.5, "period": "week", "on_exhausted": "stop"}}
    assert form_values(parse_policy("user", body).model_dump(exclude_defaults=True))["budget_gpu_hours"] == "12.5"
    # The selects alone, without hours, make no budget.
    assert form_body("group", {"budget_period": "month", "budget_on_exhausted": "hold"}) == {}
    for field, text, needle in [("budget_gpu_hours", "lots", "'lots' is not a number"),
                                ("budget_cpu_hours", "-1", "must be 0 or more"),
                                ("budget_gpu_hours", "inf", "must be 0 or more")]:
        with pytest.raises(PolicyError, match=needle):
            form_body("group", {field: text})
