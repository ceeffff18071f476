"""Accounting at a 100-user facility's scale: 1,000,000 usage records over a year loaded into the ledger (SQLite),
then a yearly report by group and by resource, against a plain SQL aggregate over the raw records (the same
exact overlap arithmetic, one full scan) on the same database in the same run.

Target: the report at most 0.1x the plain aggregate's time (it reads whole days from the daily roll-up), under
500 MiB peak memory for the report. Run: `make bench ARGS=accounting` (BENCH_RECORDS=N for a smaller run).
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))

from aifacility.accounting import report
from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UsageRecord
from aifacility.facility.model import Accounting

RECORDS = int(os.environ.get("BENCH_RECORDS", "1000000"))
BATCH = 50_000
YEAR = datetime(2026, 1, 1, tzinfo=UTC)
RESOURCES = [("cpu", ""), ("memory", ""), ("gpu", "Tesla-T4"), ("gpu", "NVIDIA-A100-SXM4-80GB"), ("mig", "1g.10gb"),
             ("mig", "3g.40gb"), ("fpga", "Alveo-V70")]


def batches(rnd: random.Random) -> Iterator[list[UsageRecord]]:
    users = [f"user{i:03d}" for i in range(100)]
    groups = [f"group{i}" for i in range(8)]
    sites = ["local", "leonardo", "htc-tier1"]
    kinds = ["notebook", "job", "dask", "offload"]
    seconds_in_year = 365 * 86400
    batch: list[UsageRecord] = []
    for n in range(RECORDS):
        start = YEAR + timedelta(seconds=rnd.randrange(seconds_in_year))
        end = None if rnd.random() < 0.01 else start + timedelta(seconds=rnd.randrange(60, 8 * 3600))
        res, model = RESOURCES[n % len(RESOURCES)]
        user = rnd.choice(users)
        batch.append(UsageRecord(id=f"bench:{n}", user=user, group=groups[hash(user) % 8], kind=rnd.choice(kinds),
                                 resource=res, model=model, quantity=rnd.choice([1, 2, 4, 8]), start=start, end=end,
                                 site=rnd.choice(sites)))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def timed(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-accounting-") as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/ledger.sqlite")
        rnd = random.Random(1)
        ingest_s = 0.0
        for batch in batches(rnd):
            t = time.perf_counter()
            ledger.ingest(batch)
            ingest_s += time.perf_counter() - t
        size_mib = Path(f"{tmp}/ledger.sqlite").stat().st_size / 2**20
        print(f"ingest: {RECORDS:,} records in {ingest_s:.1f} s ({RECORDS / ingest_s:,.0f} records/s, validation "
              f"and roll-up included); ledger file {size_mib:.0f} MiB")
        start, end = YEAR, YEAR + timedelta(days=365)
        now = end
        settings = Accounting()
        with ledger.engine.connect() as conn:
            for by in ("group", "resource"):
                plain_s, plain = timed(lambda by=by: report._raw(conn, start.timestamp(), end.timestamp(),
                                                                 now.timestamp(), (by,), "all"))
                tracemalloc.start()
                report_s, rep = timed(lambda by=by: report.build(conn, by, start, end, settings, now=now))
                peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
                # the same answer as the plain aggregate, to the rounding of floating-point sums
                want: dict[str, float] = {}
                for (key,), _res, _model, seconds, _n in plain:
                    want[key] = want.get(key, 0.0) + seconds / 3600
                got: dict[str, float] = {}
                for row in rep.rows:
                    got[row.key] = got.get(row.key, 0.0) + row.hours
                assert want.keys() == got.keys() and all(abs(got[k] - want[k]) <= 1e-6 * max(1.0, want[k])
                                                         for k in want), (want, got)
                ratio = report_s / plain_s
                print(f"yearly report by {by}: {report_s * 1000:.0f} ms vs plain SQL aggregate {plain_s * 1000:.0f} ms"
                      f" -> ratio {ratio:.3f} (target <= 0.1: {'met' if ratio <= 0.1 else 'NOT met'}); "
                      f"report peak Python memory {peak_mib:.1f} MiB (target < 500)")
        ledger.close()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {rss_mib:.0f} MiB (record generation included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
