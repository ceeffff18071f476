"""Roll-ups of closed usage, by UTC day and by UTC month, per (user, group, resource, model, site): the
unit-seconds within each day or month and how many records started in it. Kept in the same transaction as the
records they sum, so a report reads whole months and whole days from them and only the period's partial edge days
and the open records from the records, and stays exact at the period's bounds (XDMoD pre-aggregates by day,
month, quarter and year the same way)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from aifacility.accounting.schema import usage_daily, usage_monthly

DAY = 86400.0
KEY = ("user_name", "group_name", "resource", "model", "site")
Sums = dict[tuple[float, str, str, str, str, str], list[float]]


def day_of(ts: float) -> float:
    return ts - ts % DAY


def month_of(ts: float) -> float:
    moment = datetime.fromtimestamp(ts, UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()


def next_month(ts: float) -> float:
    moment = datetime.fromtimestamp(ts, UTC)
    return datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC).timestamp()


def split(start: float, end: float) -> list[tuple[float, float]]:
    """(UTC day, seconds within it) for each day [start, end) touches; one day with 0 s for an empty span."""
    out = []
    day = day_of(start)
    while day < end:
        out.append((day, min(end, day + DAY) - max(start, day)))
        day += DAY
    return out or [(day_of(start), 0.0)]


@dataclass
class Totals:
    daily: Sums = field(default_factory=dict)
    monthly: Sums = field(default_factory=dict)
    _months: dict[float, float] = field(default_factory=dict)  # day -> its month (computing it is not free)

    def add(self, row: Mapping[Any, Any], end: float) -> None:
        """Add one closed record (a usage_records row's mapping, or its dict) ending at `end`."""
        user, group, resource, model, site = (str(row[k]) for k in KEY)
        quantity = float(row["quantity"])
        for i, (day, seconds) in enumerate(split(float(row["start_ts"]), end)):
            month = self._months.get(day)
            if month is None:
                month = self._months[day] = month_of(day)
            for sums, bucket in ((self.daily, day), (self.monthly, month)):
                acc = sums.setdefault((bucket, user, group, resource, model, site), [0.0, 0])
                acc[0] += quantity * seconds
                if i == 0:
                    acc[1] += 1

    def upsert(self, conn: Connection) -> None:
        """Add the totals to the roll-ups (insert, or add to the existing sums)."""
        for table, sums in ((usage_daily, self.daily), (usage_monthly, self.monthly)):
            _upsert(conn, table, sums)


def _upsert(conn: Connection, table: Table, sums: Sums) -> None:
    if not sums:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    values = [{"period": k[0], **dict(zip(KEY, k[1:], strict=True)), "unit_seconds": v[0], "started": int(v[1])}
              for k, v in sums.items()]
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["period", *KEY],
        set_={"unit_seconds": table.c.unit_seconds + stmt.excluded.unit_seconds,
              "started": table.c.started + stmt.excluded.started})
    for at in range(0, len(values), 500):
        conn.execute(stmt, values[at:at + 500])
