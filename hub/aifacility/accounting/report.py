"""Usage over a period, split exactly at the period's bounds, per user, group, resource, site or model; with
GPU-equivalents (MIG slices by their fraction of a GPU), energy and CO2-equivalent.

The overlap of each record with the period is computed in SQL (CASE, portable between SQLite and PostgreSQL, whose
scalar min/max differ): a record from 23:00 to 01:00 counts one hour in each day. A record still open counts
up to `now`. Whole months and days are read from the roll-ups (rollup.py): a yearly report does not scan every
record. A record whose GPU energy DCGM measured (dcgm.py) counts that energy, spread evenly over its hours, in
place of its model's power figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, Table, case, func, literal, select

from aifacility.accounting.record import UNITS
from aifacility.accounting.rollup import DAY, month_of, next_month
from aifacility.accounting.schema import measured_energy, usage, usage_daily, usage_monthly
from aifacility.facility.model import Accounting

By = Literal["user", "group", "resource", "site", "model"]
BY: tuple[str, ...] = ("user", "group", "resource", "site", "model")
_COLUMN = {"user": usage.c.user_name, "group": usage.c.group_name, "resource": usage.c.resource,
           "site": usage.c.site, "model": usage.c.model, "kind": usage.c.kind}
# "3g.40gb", "1g.10gb.me", and "1c.3g.40gb" (a compute instance of 1 of its GPU instance's 3 slices)
_MIG = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.")
MAX_PERIOD = timedelta(days=5 * 366)


class ReportError(ValueError):
    """The report cannot be made as asked (bad period or grouping); the message says what to change."""


@dataclass
class Row:
    key: str  # the value of the grouping (a user, a group, ...)
    resource: str
    unit: str
    hours: float = 0.0  # unit-hours: core-hours, GiB-hours, GPU-hours, slice-hours, FPGA-hours
    gpu_equivalent_hours: float = 0.0
    energy_kwh: float = 0.0
    measured_energy_kwh: float = 0.0  # the part of energy_kwh that DCGM measured (the rest is estimated)
    co2e_kg: float = 0.0
    started: int = 0  # records (sessions, jobs, workers) that started within the period


@dataclass
class Report:
    by: str
    start: datetime
    end: datetime
    rows: list[Row]
    unpowered_models: list[str] = field(default_factory=list)  # models without a power figure: no energy counted

    def total(self, attribute: str) -> float:
        return float(sum(getattr(r, attribute) for r in self.rows))


def mig_fraction(profile: str, settings: Accounting) -> float:
    """`3g.40gb` → 3/7 of a GPU (settings.gpu_slices), unless settings.mig_fraction names the profile."""
    if profile in settings.mig_fraction:
        return settings.mig_fraction[profile]
    m = _MIG.match(profile)
    if not m:
        return 1.0
    # A compute instance holds its own slices' share of the GPU's compute (its GPU instance's memory is shared).
    return min(1.0, int(m.group(1) or m.group(2)) / settings.gpu_slices)


def watts(resource: str, model: str, settings: Accounting) -> float | None:
    """Power per unit of the resource; None when the facility file gives no figure for the model."""
    if resource in ("cpu", "memory"):
        return settings.power_watts.get(resource)
    if model in settings.power_watts:
        return settings.power_watts[model]
    if resource == "mig":
        return settings.mig_gpu_watts * mig_fraction(model, settings)
    return None


def check_period(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ReportError("the period's bounds need a time zone (dates are taken as UTC midnight)")
    if end <= start:
        raise ReportError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    if end - start > MAX_PERIOD:
        raise ReportError("a report covers at most 5 years; split it into several")


Part = tuple[tuple[str, ...], str, str, float, int]  # dimension values, resource, model, unit-seconds, started


def _raw(conn: Connection, a: float, b: float, now: float, dims: tuple[str, ...], which: str,
         user: str | None = None) -> list[Part]:
    """From the records: unit-seconds within [a, b) and how many started in it; `which`: open, closed or all."""
    end_eff = case((usage.c.end_ts.is_(None), literal(now)), else_=usage.c.end_ts)
    lo = case((usage.c.start_ts > a, usage.c.start_ts), else_=literal(a))
    hi = case((end_eff < b, end_eff), else_=literal(b))
    started = case(((usage.c.start_ts >= a) & (usage.c.start_ts < b), 1), else_=0)
    cols = [_COLUMN[d] for d in dims]
    q = (select(*cols, usage.c.resource, usage.c.model, func.sum(usage.c.quantity * (hi - lo)), func.sum(started))
         .where(usage.c.start_ts < b, end_eff > a, end_eff >= usage.c.start_ts)
         .group_by(*cols, usage.c.resource, usage.c.model))
    if user is not None:
        q = q.where(usage.c.user_name == user)
    if which == "open":
        q = q.where(usage.c.end_ts.is_(None))
    elif which == "closed":
        q = q.where(usage.c.end_ts.is_not(None))
    return [(tuple(str(v) for v in row[:len(dims)]), str(row[len(dims)]), str(row[len(dims) + 1]),
             float(row[len(dims) + 2] or 0), int(row[len(dims) + 3] or 0)) for row in conn.execute(q)]


def _rolled(conn: Connection, table: Table, a: float, b: float, dims: tuple[str, ...],
            user: str | None = None) -> list[Part]:
    """From a roll-up (daily or monthly): the closed records' unit-seconds in the whole periods [a, b)."""
    cols = [table.c[_COLUMN[d].name] for d in dims]
    q = (select(*cols, table.c.resource, table.c.model, func.sum(table.c.unit_seconds), func.sum(table.c.started))
         .where(table.c.period >= a, table.c.period < b)
         .group_by(*cols, table.c.resource, table.c.model))
    if user is not None:
        q = q.where(table.c.user_name == user)
    return [(tuple(str(v) for v in row[:len(dims)]), str(row[len(dims)]), str(row[len(dims) + 1]),
             float(row[len(dims) + 2] or 0), int(row[len(dims) + 3] or 0)) for row in conn.execute(q)]


def _closed(conn: Connection, a: float, b: float, now: float, dims: tuple[str, ...],
            user: str | None) -> list[Part]:
    """The closed records' usage in [a, b): whole months from the monthly roll-up, whole days around them from the
    daily one, the partial days at the edges from the records themselves."""
    d0, d1 = -(-a // DAY) * DAY, b - b % DAY
    if d0 >= d1:
        return _raw(conn, a, b, now, dims, "closed", user)
    parts: list[Part] = []
    if a < d0:
        parts += _raw(conn, a, d0, now, dims, "closed", user)
    if d1 < b:
        parts += _raw(conn, d1, b, now, dims, "closed", user)
    m0 = d0 if month_of(d0) == d0 else next_month(d0)
    m1 = month_of(d1)
    if m0 < m1:
        parts += _rolled(conn, usage_monthly, m0, m1, dims, user)
        parts += _rolled(conn, usage_daily, d0, m0, dims, user) if d0 < m0 else []
        parts += _rolled(conn, usage_daily, m1, d1, dims, user) if m1 < d1 else []
    else:
        parts += _rolled(conn, usage_daily, d0, d1, dims, user)
    return parts


def unit_hours(conn: Connection, start: datetime, end: datetime, now: datetime, dims: tuple[str, ...],
               user: str | None = None) -> list[tuple[tuple[str, ...], str, str, float, int]]:
    """(dimension values, resource, model, unit-hours, records started) for the usage within [start, end),
    of everyone or of one `user`."""
    t0, t1, t_now = start.timestamp(), end.timestamp(), now.timestamp()
    parts = _closed(conn, t0, t1, t_now, dims, user) + _raw(conn, t0, t1, t_now, dims, "open", user)
    merged: dict[tuple[tuple[str, ...], str, str], list[float]] = {}
    for values, resource, model, seconds, started in parts:
        acc = merged.setdefault((values, resource, model), [0.0, 0])
        acc[0] += seconds
        acc[1] += started
    return [(v, r, m, acc[0] / 3600, int(acc[1])) for (v, r, m), acc in merged.items() if acc[0] > 0 or acc[1]]


def build(conn: Connection, by: str, start: datetime, end: datetime, settings: Accounting,
          now: datetime | None = None, user: str | None = None) -> Report:
    """The report of everyone's usage, or of one `user`'s ("my usage")."""
    if by not in BY:
        raise ReportError(f"--by {by!r} is not one of {', '.join(BY)}")
    check_period(start, end)
    now = now or datetime.now(UTC)
    rows: dict[tuple[str, str], Row] = {}
    unpowered: set[str] = set()
    for (key,), resource, model, hours, n in unit_hours(conn, start, end, now, (by,), user):
        row = rows.setdefault((key, resource), Row(key=key, resource=resource, unit=UNITS.get(resource, "")))
        row.hours += hours
        row.started += n
        if resource == "gpu":
            row.gpu_equivalent_hours += hours
        elif resource == "mig":
            row.gpu_equivalent_hours += hours * mig_fraction(model, settings)
        w = watts(resource, model, settings)
        if w is None:
            unpowered.add(model or f"({resource} without a model)")
            continue
        kwh = hours * w / 1000
        row.energy_kwh += kwh
        row.co2e_kg += kwh * settings.grid_gco2e_per_kwh / 1000
    for (key, resource), measured, estimated in _measured(conn, by, start, end, now, settings, user):
        measured_row = rows.get((key, resource))
        if measured_row is None:
            continue
        measured_row.measured_energy_kwh += measured
        measured_row.energy_kwh += measured - estimated
        measured_row.co2e_kg += (measured - estimated) * settings.grid_gco2e_per_kwh / 1000
    ordered = sorted(rows.values(), key=lambda r: (r.key, r.resource))
    return Report(by=by, start=start, end=end, rows=ordered, unpowered_models=sorted(unpowered))


def _measured(conn: Connection, by: str, start: datetime, end: datetime, now: datetime, settings: Accounting,
              user: str | None) -> list[tuple[tuple[str, str], float, float]]:
    """For each record with DCGM-measured energy that overlaps the period: its grouping key, the measured kWh in
    the period (the measurement spread evenly over the record's hours) and the estimate it replaces."""
    t0, t1, t_now = start.timestamp(), end.timestamp(), now.timestamp()
    end_eff = case((usage.c.end_ts.is_(None), literal(t_now)), else_=usage.c.end_ts)
    # From the (few) measured records to theirs by primary key: never a scan of the whole ledger.
    measured = (select(measured_energy.c.record_id, func.sum(measured_energy.c.joules).label("joules"))
                .group_by(measured_energy.c.record_id).subquery())
    q = (select(_COLUMN[by], usage.c.resource, usage.c.model, usage.c.quantity, usage.c.start_ts, end_eff,
                measured.c.joules)
         .select_from(measured.join(usage, usage.c.id == measured.c.record_id))
         .where(usage.c.start_ts < t1, end_eff > t0))
    if user is not None:
        q = q.where(usage.c.user_name == user)
    out = []
    for key, resource, model, quantity, a, b, joules in conn.execute(q):
        span = float(b) - float(a)
        inside = min(float(b), t1) - max(float(a), t0)
        if span <= 0 or inside <= 0:
            continue
        w = watts(str(resource), str(model), settings)
        estimated = inside / 3600 * float(quantity) * w / 1000 if w is not None else 0.0
        out.append(((str(key), str(resource)), float(joules or 0) / 3.6e6 * inside / span, estimated))
    return out


def daily(conn: Connection, start: datetime, end: datetime, settings: Accounting,
          now: datetime | None = None, user: str | None = None) -> list[tuple[datetime, float, float]]:
    """(day, GPU-equivalent hours, CPU core-hours) per UTC day of the period: the usage-over-time plot."""
    now = now or datetime.now(UTC)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day < end:
        nxt = day + timedelta(days=1)
        gpu = cpu = 0.0
        for _, resource, model, hours, _n in unit_hours(conn, max(day, start), min(nxt, end), now, (), user):
            if resource == "gpu":
                gpu += hours
            elif resource == "mig":
                gpu += hours * mig_fraction(model, settings)
            elif resource == "cpu":
                cpu += hours
        out.append((day, gpu, cpu))
        day = nxt
    return out
