"""Usage records from HTCondor's job queue and history, for jobs the interLink plugin offloaded to an HTC site.

The plugin marks each job with `+AifacilityUser` and `+AifacilityGroup` (from the pod's labels, after the
site's own submit lines, so they cannot be overridden). Each sweep asks the schedd for the facility's running jobs
(open records from `JobCurrentStartDate`) and for its history since the watermark (jobs that left the queue:
completed, removed). An ended job's record runs for its `RemoteWallClockTime` (every run of a job that was
evicted and restarted, as APEL's HTCondor parser counts it) up to `CompletionDate`, or `EnteredCurrentStatus` for
a removed job. Quantities are what the job asked for (`RequestCpus`, `RequestMemory` in MiB, `RequestGPUs`),
which the slot held. Ids are `htcondor:<GlobalJobId>/<resource>`; the ledger loads them exactly once.

The facility's `accounting.batch_accounted_sites` names the sites read this way, so that the pod collector leaves
their pods alone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UsageRecord
from aifacility.accounting.site import SiteCollector, SiteError

PREFIX = "htcondor:"
PROJECTION = ["GlobalJobId", "AifacilityUser", "AifacilityGroup", "JobStatus", "JobCurrentStartDate",
              "CompletionDate", "EnteredCurrentStatus", "RemoteWallClockTime", "RequestCpus", "RequestMemory",
              "RequestGPUs"]
OURS = "AifacilityUser =!= undefined"
RUNNING, REMOVED, COMPLETED, HELD = 2, 3, 4, 5

Ad = Any  # a classad2.ClassAd (or a dict, in tests of the arithmetic)


class CondorError(SiteError):
    """The schedd could not be reached or refused the query; the message is HTCondor's own."""


def _value(ad: Ad, key: str) -> Any:
    """An attribute's value, evaluated where it is an expression (RequestMemory often is)."""
    if key not in ad:
        return None
    value = ad.eval(key) if hasattr(ad, "eval") else ad[key]
    return value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None


def _number(ad: Ad, key: str) -> float:
    value = _value(ad, key)
    return float(value) if isinstance(value, (int, float)) else 0.0


def ad_records(ad: Ad, site: str) -> list[UsageRecord]:
    """The usage records of one job ad (none for a job that is not the facility's or never ran)."""
    user, job_id = _value(ad, "AifacilityUser"), _value(ad, "GlobalJobId")
    status = int(_number(ad, "JobStatus"))
    current_start = _number(ad, "JobCurrentStartDate")
    if not isinstance(user, str) or not user or not isinstance(job_id, str):
        return []
    if status == RUNNING:
        if current_start <= 0:
            return []
        start, end = current_start, None
    elif status in (REMOVED, COMPLETED, HELD):
        end = _number(ad, "CompletionDate") or _number(ad, "EnteredCurrentStatus")
        wall = _number(ad, "RemoteWallClockTime")
        if end <= 0 or (wall <= 0 and current_start <= 0):
            return []  # removed or held before it ever ran
        start = end - wall if wall > 0 else current_start
    else:
        return []  # idle: nothing held
    group = _value(ad, "AifacilityGroup")
    common = {"user": user, "group": group if isinstance(group, str) and group else "unassigned", "kind": "offload",
              "site": site, "start": datetime.fromtimestamp(start, UTC),
              "end": None if end is None else datetime.fromtimestamp(max(end, start), UTC)}
    amounts = {"cpu": _number(ad, "RequestCpus"), "memory": _number(ad, "RequestMemory") / 1024,
               "gpu": _number(ad, "RequestGPUs")}
    records = []
    for resource, quantity in amounts.items():
        if quantity <= 0:
            continue
        try:
            records.append(UsageRecord.model_validate({"id": f"{PREFIX}{job_id}/{resource}", "resource": resource,
                                                       "quantity": quantity, **common}))
        except ValidationError:
            continue
    return records


def schedd_reader(schedd_name: str | None = None, collector: str | None = None) -> Callable[[float], list[Ad]]:
    """A reader of the facility's job ads, running ones and those that left the queue since a time (epoch s),
    from the local schedd or one located through a collector, with the HTCondor Python bindings."""

    def read(since: float) -> list[Ad]:
        try:
            import htcondor2
        except ImportError:
            raise CondorError("the HTCondor Python bindings are missing (pip install htcondor)") from None
        try:
            if schedd_name:
                coll = htcondor2.Collector(collector) if collector else htcondor2.Collector()
                schedd = htcondor2.Schedd(coll.locate(htcondor2.DaemonType.Schedd, schedd_name))
            else:
                schedd = htcondor2.Schedd()
            running = schedd.query(constraint=f"{OURS} && JobStatus == {RUNNING}", projection=PROJECTION)
            ended = schedd.history(constraint=f"{OURS} && EnteredCurrentStatus >= {int(since)}",
                                   projection=PROJECTION)
            return [*running, *ended]
        except (htcondor2.HTCondorException, OSError, RuntimeError, ValueError) as exc:
            raise CondorError(f"HTCondor: {exc}") from None

    return read


class CondorCollector(SiteCollector):
    """Reads the site's running jobs and its history since the watermark into the ledger."""

    kind = "htcondor"

    def __init__(self, ledger: Ledger, site: str, read: Callable[[float], list[Ad]],
                 first_window_seconds: float = 7 * 86400) -> None:
        super().__init__(ledger, site, first_window_seconds)
        self.read = read

    def fetch(self, since: float, until: float) -> list[UsageRecord]:
        return [r for ad in self.read(since) for r in ad_records(ad, self.site)]
