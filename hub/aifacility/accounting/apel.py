"""APEL exports, so a site can report the facility's usage to its national (EGI/WLCG) accounting.

- `summaries`: `APEL-summary-job-message: v0.3`, one summary per user, group (VO), site and core count for the
  CPU records that *ended* in the month (UTC), as APEL counts jobs. The ledger holds allocations, not measured CPU
  time: CpuDuration is 0 (APEL requires the field; a made-up figure would be worse).
- `accelerators`: `APEL-accelerator-message` v0.1 (JSON), one record per GPU, MIG or FPGA usage record and month
  it overlaps: `Count` is decimal (a MIG slice counts its fraction of the GPU), `ActiveDuration` the seconds
  within the month.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from aifacility.accounting.report import mig_fraction
from aifacility.accounting.schema import usage
from aifacility.facility.model import Accounting

_TYPE = {"gpu": "GPU", "mig": "GPU", "fpga": "FPGA"}


def month_bounds(year: int, month: int) -> tuple[float, float]:
    if not 1 <= month <= 12 or not 1970 <= year <= 9999:
        raise ValueError(f"{year}-{month:02d} is not a month (YYYY-MM)")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def summaries(conn: Connection, year: int, month: int, settings: Accounting) -> str:
    t0, t1 = month_bounds(year, month)
    q = select(usage).where(usage.c.resource == "cpu", usage.c.end_ts >= t0, usage.c.end_ts < t1)
    groups: dict[tuple[str, str, str, int], list[tuple[float, float]]] = defaultdict(list)
    for r in conn.execute(q):
        groups[(r.user_name, r.group_name, r.site, max(1, round(r.quantity)))].append((r.start_ts, r.end_ts))
    out = ["APEL-summary-job-message: v0.3"]
    for (user, group, site, cores), spans in sorted(groups.items()):
        wall = int(sum(e - s for s, e in spans))
        out += [
            f"Site: {settings.site}", f"Month: {month}", f"Year: {year}", f"GlobalUserName: {user}",
            f"VO: {group}", f"VOGroup: /{group}", "VORole: Role=NULL", f"SubmitHost: {site}",
            f"Infrastructure: aifacility:{site}", "NodeCount: 1", f"Processors: {cores}",
            f"EarliestEndTime: {int(min(e for _, e in spans))}", f"LatestEndTime: {int(max(e for _, e in spans))}",
            f"WallDuration: {wall}", "CpuDuration: 0", f"NormalisedWallDuration: {wall}",
            "NormalisedCpuDuration: 0", f"NumberOfJobs: {len(spans)}", "%%",
        ]
    return "\n".join(out) + "\n"


def accelerators(conn: Connection, year: int, month: int, settings: Accounting, now: datetime | None = None) -> str:
    t0, t1 = month_bounds(year, month)
    t_now = (now or datetime.now(UTC)).timestamp()
    q = select(usage).where(usage.c.resource.in_(list(_TYPE)), usage.c.start_ts < t1)
    records = []
    for r in conn.execute(q):
        end = r.end_ts if r.end_ts is not None else t_now
        active = min(end, t1) - max(r.start_ts, t0)
        if active <= 0:
            continue
        count = r.quantity * (mig_fraction(r.model, settings) if r.resource == "mig" else 1.0)
        records.append({
            "MeasurementMonth": month, "MeasurementYear": year, "AssociatedRecordType": r.kind,
            "AssociatedRecord": r.id, "GlobalUserName": r.user_name, "FQAN": f"/{r.group_name}",
            "SiteName": settings.site, "Count": round(count, 4), "ActiveDuration": int(active),
            "AvailableDuration": int(active), "Type": _TYPE[r.resource], "Model": r.model or "unknown",
        })
    return json.dumps({"Type": "APEL-accelerator-message", "Version": "0.1", "UsageRecords": records}, indent=2) + "\n"
