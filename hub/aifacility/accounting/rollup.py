"""The daily roll-up: per UTC day and (user, group, kind, resource, model, site), the unit-seconds of *closed*
records and how many of them started that day. Kept in the same transaction as the records it sums, so a report
reads whole days from it and only the period's partial edge days and the open records from the raw records,
and stays exact at the period's bounds (XDMoD pre-aggregates by day the same way)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from aifacility.accounting.schema import usage_daily

DAY = 86400.0
KEY = ("user_name", "group_name", "kind", "resource", "model", "site")
Totals = dict[tuple[float, str, str, str, str, str, str], list[float]]


def day_of(ts: float) -> float:
    return ts - ts % DAY


def split(start: float, end: float) -> list[tuple[float, float]]:
    """(UTC day, seconds within it) for each day [start, end) touches; one day with 0 s for an empty span."""
    out = []
    day = day_of(start)
    while day < end:
        out.append((day, min(end, day + DAY) - max(start, day)))
        day += DAY
    return out or [(day_of(start), 0.0)]


def add(totals: Totals, row: Mapping[Any, Any], end: float) -> None:
    """Add one closed record (a usage_records row's mapping) ending at `end` to `totals`."""
    user, group, kind, resource, model, site = (str(row[k]) for k in KEY)
    for i, (day, seconds) in enumerate(split(float(row["start_ts"]), end)):
        acc = totals.setdefault((day, user, group, kind, resource, model, site), [0.0, 0])
        acc[0] += float(row["quantity"]) * seconds
        if i == 0:
            acc[1] += 1


def upsert(conn: Connection, totals: Totals) -> None:
    """Add `totals` to the roll-up (insert, or add to the day's existing sums)."""
    if not totals:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    values = [{"day": k[0], **dict(zip(KEY, k[1:], strict=True)), "unit_seconds": v[0], "started": int(v[1])}
              for k, v in totals.items()]
    stmt = insert(usage_daily)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", *KEY],
        set_={"unit_seconds": usage_daily.c.unit_seconds + stmt.excluded.unit_seconds,
              "started": usage_daily.c.started + stmt.excluded.started})
    for at in range(0, len(values), 500):
        conn.execute(stmt, values[at:at + 500])
