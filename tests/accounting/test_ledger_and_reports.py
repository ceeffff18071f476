"""The ledger on SQLite and PostgreSQL: records loaded exactly once, open records closed later; reports split hours
at the period's bounds, weight MIG slices, estimate energy and CO2; CSV, JSON, HTML and APEL exports; the CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aifacility.accounting import apel, render, report
from aifacility.accounting.ledger import Ledger, LedgerError
from aifacility.accounting.record import UsageRecord
from aifacility.facility.model import Accounting

SETTINGS = Accounting(power_watts={"cpu": 10, "memory": 0.5, "Tesla-T4": 70}, mig_gpu_watts=420,
                      grid_gco2e_per_kwh=300, site="TEST-SITE")
NOW = datetime(2026, 12, 10, tzinfo=UTC)


def rec(id: str, **fields: Any) -> UsageRecord:
    base: dict[str, Any] = {"id": id, "user": "alice", "group": "physics", "kind": "notebook", "resource": "cpu",
                            "quantity": 1, "start": "2026-12-01T00:00:00Z", "end": "2026-12-01T01:00:00Z"}
    return UsageRecord.model_validate({**base, **fields})


def rows(rep: report.Report) -> dict[tuple[str, str], report.Row]:
    return {(r.key, r.resource): r for r in rep.rows}


def test_records_load_exactly_once_and_open_ones_close_later(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    try:
        open_gpu = rec("pod-1/gpu", resource="gpu", model="Tesla-T4", start="2026-12-01T10:00:00Z", end=None)
        first = ledger.ingest([open_gpu, rec("pod-1/cpu", quantity=4)])
        assert (first.inserted, first.closed, first.unchanged) == (2, 0, 0)
        again = ledger.ingest([open_gpu, rec("pod-1/cpu", quantity=4)])
        assert (again.inserted, again.closed, again.unchanged) == (0, 0, 2)
        # while open, it counts up to now; a changed quantity in a re-sent record changes nothing
        with ledger.engine.connect() as conn:
            rep = report.build(conn, "resource", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC),
                               SETTINGS, now=datetime(2026, 12, 1, 13, tzinfo=UTC))
        assert rows(rep)[("gpu", "gpu")].hours == pytest.approx(3.0)
        closing = rec("pod-1/gpu", resource="gpu", model="Tesla-T4", start="2026-12-01T10:00:00Z",
                      end="2026-12-01T12:30:00Z")
        assert ledger.ingest([closing, rec("pod-1/cpu", quantity=8)]).closed == 1
        assert ledger.ingest([closing]).unchanged == 1
        with ledger.engine.connect() as conn:
            rep = report.build(conn, "resource", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC),
                               SETTINGS, now=NOW)
            count = conn.execute(text("SELECT count(*) FROM usage_records")).scalar()
        assert count == 2
        assert rows(rep)[("gpu", "gpu")].hours == pytest.approx(2.5)
        assert rows(rep)[("cpu", "cpu")].hours == pytest.approx(4.0)
    finally:
        ledger.close()
    # the schema is migrated once: opening again is a no-op, at Alembic's head
    again_ledger = Ledger(ledger_url)
    with again_ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    again_ledger.close()


def test_hours_split_at_bounds_mig_weighted_with_energy_and_carbon(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.ingest([
        # 23:00 → 01:00 across the period's start: one hour counts
        rec("nb/cpu", quantity=4, start="2026-11-30T23:00:00Z", end="2026-12-01T01:00:00Z"),
        rec("nb/gpu", resource="gpu", model="Tesla-T4", start="2026-11-30T23:00:00Z", end="2026-12-01T01:00:00Z"),
        # two 3g.40gb slices for 7 h = 14 slice-hours = 6 GPU-hours (3/7 each)
        rec("job/mig", user="bob", group="cms", kind="job", resource="mig", model="3g.40gb", quantity=2,
            start="2026-12-02T00:00:00Z", end="2026-12-02T07:00:00Z"),
        # an offloaded job still running, across the period's end: counts to the end
        rec("slurm:1", user="bob", group="cms", kind="offload", resource="cpu", quantity=8, site="leonardo",
            start="2026-12-02T22:00:00Z", end=None),
        rec("fpga", user="bob", group="cms", kind="job", resource="fpga", model="Alveo-V70",
            start="2026-12-02T00:00:00Z", end="2026-12-02T02:00:00Z"),
        # outside the period entirely
        rec("old", start="2026-11-01T00:00:00Z", end="2026-11-02T00:00:00Z"),
    ])
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)
    with ledger.engine.connect() as conn:
        by_group = rows(report.build(conn, "group", start, end, SETTINGS, now=NOW))
        by_site = rows(report.build(conn, "site", start, end, SETTINGS, now=NOW))
        by_model = report.build(conn, "model", start, end, SETTINGS, now=NOW)
    ledger.close()
    assert by_group[("physics", "cpu")].hours == pytest.approx(4.0)
    assert by_group[("physics", "gpu")].gpu_equivalent_hours == pytest.approx(1.0)
    assert by_group[("physics", "gpu")].energy_kwh == pytest.approx(0.070)  # 70 W for 1 h
    assert by_group[("physics", "gpu")].co2e_kg == pytest.approx(0.070 * 0.300)  # 300 g/kWh
    mig = by_group[("cms", "mig")]
    assert (mig.unit, mig.hours, mig.gpu_equivalent_hours) == ("slice", pytest.approx(14.0), pytest.approx(6.0))
    assert mig.energy_kwh == pytest.approx(14 * 420 * 3 / 7 / 1000)
    assert by_group[("cms", "cpu")].hours == pytest.approx(8 * 2.0)  # 22:00 → midnight, 8 cores
    assert by_group[("cms", "cpu")].energy_kwh == pytest.approx(16 * 10 / 1000)
    assert by_site[("leonardo", "cpu")].hours == pytest.approx(16.0)
    assert by_site[("local", "cpu")].hours == pytest.approx(4.0)
    assert "Alveo-V70" in by_model.unpowered_models  # no figure in these settings: no energy, and said so
    assert rows(by_model)[("Alveo-V70", "fpga")].energy_kwh == 0


def _sample(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.ingest([
        rec("a/cpu", quantity=2, start="2026-12-01T08:00:00Z", end="2026-12-01T12:00:00Z"),
        rec("a/gpu", resource="gpu", model="Tesla-T4", start="2026-12-01T08:00:00Z", end="2026-12-01T12:00:00Z"),
        rec("b/mig", user="bob", group="cms", resource="mig", model="1g.10gb",
            start="2026-12-02T08:00:00Z", end="2026-12-02T15:00:00Z"),
    ])
    ledger.close()


def test_csv_json_and_offline_html(ledger_url: str) -> None:
    _sample(ledger_url)
    ledger = Ledger(ledger_url)
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 4, tzinfo=UTC)
    with ledger.engine.connect() as conn:
        rep = report.build(conn, "user", start, end, SETTINGS, now=NOW)
        days = report.daily(conn, start, end, SETTINGS, now=NOW)
        groups = report.build(conn, "group", start, end, SETTINGS, now=NOW)
    ledger.close()
    table = list(csv.DictReader(io.StringIO(render.to_csv(rep))))
    assert list(table[0]) == ["user", "resource", "unit", "hours", "gpu_equivalent_hours", "energy_kwh",
                              "measured_energy_kwh", "co2e_kg", "started"]
    assert {(r["user"], r["resource"], float(r["hours"])) for r in table} == {
        ("alice", "cpu", 8.0), ("alice", "gpu", 4.0), ("bob", "mig", 7.0)}
    doc = json.loads(render.to_json(rep))
    assert doc["totals"]["gpu_equivalent_hours"] == pytest.approx(4 + 7 / 7)
    assert [d.day for d, _, _ in days] == [1, 2, 3]
    assert [round(g, 3) for _, g, _ in days] == [4.0, 1.0, 0.0]
    page = render.to_html(rep, render.plots(rep, days, groups))
    assert page.count("<svg") == 3 and "<script" not in page and "src=\"http" not in page
    assert "<td>alice</td>" in page


def test_apel_summary_and_accelerator_records(ledger_url: str) -> None:
    _sample(ledger_url)
    ledger = Ledger(ledger_url)
    with ledger.engine.connect() as conn:
        summary = apel.summaries(conn, 2026, 12, SETTINGS)
        accel = json.loads(apel.accelerators(conn, 2026, 12, SETTINGS, now=NOW))
    ledger.close()
    assert summary.startswith("APEL-summary-job-message: v0.3\n")
    block = summary.split("%%")[0]
    assert "Site: TEST-SITE" in block and "GlobalUserName: alice" in block and "VO: physics" in block
    assert "WallDuration: 14400" in block and "NumberOfJobs: 1" in block and "Processors: 2" in block
    by_id = {r["AssociatedRecord"]: r for r in accel["UsageRecords"]}
    assert by_id["a/gpu"]["Count"] == 1.0 and by_id["a/gpu"]["ActiveDuration"] == 4 * 3600
    assert by_id["b/mig"]["Count"] == pytest.approx(1 / 7, abs=1e-4) and by_id["b/mig"]["Type"] == "GPU"
    assert by_id["b/mig"]["Model"] == "1g.10gb" and by_id["b/mig"]["FQAN"] == "/cms"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aifacility.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_ingest_rejects_bad_lines_by_number_and_loads_the_rest_once(ledger_url: str, tmp_path: Path) -> None:
    good = rec("x/cpu").model_dump_json()
    lines = [good, "{not json", json.dumps({"id": "y", "user": "bob"}),
             json.dumps({**json.loads(good), "id": "z", "quantity": -1}),
             json.dumps({**json.loads(good), "id": "w", "end": "2026-11-30T00:00:00Z"}), ""]
    f = tmp_path / "records.jsonl"
    f.write_text("\n".join(lines))
    first = _cli("accounting", "ingest", "--db", ledger_url, str(f))
    assert first.returncode == 1, first.stderr
    assert "1 record(s) loaded" in first.stdout and "4 line(s) rejected" in first.stdout
    assert "line 2: not JSON" in first.stderr and "line 3: group: Field required" in first.stderr
    assert "line 4: quantity: Input should be greater than 0" in first.stderr
    assert "line 5:" in first.stderr and "is before start" in first.stderr
    assert "Traceback" not in first.stderr
    second = _cli("accounting", "ingest", "--db", ledger_url, str(f))
    assert "0 record(s) loaded" in second.stdout and "1 already known" in second.stdout
    out = _cli("report", "--db", ledger_url, "--from", "2026-12-01", "--to", "2026-12-02", "--by", "group")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].startswith("physics,cpu,core,1.0,")


def test_cli_bad_input_answers_with_a_message(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.sqlite'}"
    cases = [
        (["report", "--db", db, "--from", "2026-12-03", "--to", "2026-12-01"], "must be after --from"),
        (["report", "--db", db, "--from", "yesterday", "--to", "2026-12-01"], "is not a date"),
        (["report", "--db", db, "--from", "2026-12-01T00:00:00", "--to", "2026-12-02"], "has no time zone"),
        (["report", "--db", db, "--from", "2020-01-01", "--to", "2026-12-02"], "at most 5 years"),
        (["report", "--db", db, "--from", "2026-12-01", "--to", "2026-12-02", "--by", "planet"], "invalid choice"),
        (["accounting", "apel", "--db", db, "--month", "2026-13"], "is not a month"),
        (["report", "--db", "mysql://x/y", "--from", "2026-12-01", "--to", "2026-12-02"], "SQLite or PostgreSQL"),
        (["report", "--db", "nonsense", "--from", "2026-12-01", "--to", "2026-12-02"], "is not a database URL"),
        (["accounting", "ingest", "--db", db, str(tmp_path / "missing.jsonl")], "cannot read"),
    ]
    for args, message in cases:
        done = _cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="cannot open the ledger at postgresql"):
        Ledger("postgresql://nobody@127.0.0.1:1/ledger")


def test_postgresql_and_sqlite_give_the_same_report(postgres: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(f"{postgres}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE same_report")
    urls = [f"sqlite:///{tmp_path / 'same.sqlite'}",
            f"postgresql+psycopg://{postgres.removeprefix('postgresql://')}/same_report"]
    outputs = []
    for url in urls:
        _sample(url)
        ledger = Ledger(url)
        ledger.ingest([rec("open", user="carol", group="ml", resource="memory", quantity=16,
                           start="2026-12-02T20:00:00Z", end=None)])
        with ledger.engine.connect() as conn:
            outputs.append([render.to_csv(report.build(conn, by, datetime(2026, 12, 1, tzinfo=UTC),
                                                       datetime(2026, 12, 3, tzinfo=UTC), SETTINGS, now=NOW))
                            for by in report.BY])
        ledger.close()
    assert outputs[0] == outputs[1]
    assert "carol,memory,GiB,64.0," in outputs[0][0]  # 16 GiB from 20:00 to the period's end


def test_metrics_show_what_is_in_use_now(ledger_url: str) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from aifacility.accounting.metrics import UsageMetrics

    ledger = Ledger(ledger_url)
    ledger.ingest([
        rec("run/cpu", quantity=2, end=None), rec("run/mem", resource="memory", quantity=4, end=None),
        rec("run/mig", resource="mig", model="3g.40gb", quantity=2, end=None),
        rec("w/gpu", user="bob", group="cms", kind="dask", resource="gpu", model="Tesla-T4", end=None),
        rec("done/cpu", quantity=64),  # ended: not in use
    ])
    metrics = UsageMetrics()
    metrics.update(ledger, SETTINGS, 1_796_000_000.0)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(metrics.registry).decode()) for s in f.samples}
    who = (("group", "physics"), ("kind", "notebook"), ("site", "local"))
    assert samples[("aifacility_usage_cpu_cores", who)] == 2
    assert samples[("aifacility_usage_memory_bytes", who)] == 4 * 2**30
    assert samples[("aifacility_usage_accelerators", tuple(sorted((*who, ("model", "3g.40gb"),
                                                                    ("resource", "mig")))))] == 2
    assert samples[("aifacility_usage_gpu_equivalents", who)] == pytest.approx(6 / 7)
    assert samples[("aifacility_usage_gpu_equivalents", (("group", "cms"), ("kind", "dask"), ("site", "local")))] == 1
    assert samples[("aifacility_accounting_sweeps_total", ())] == 1
    # the next sweep after the work ended drops its series
    ledger.close_records(["run/cpu", "run/mem", "run/mig", "w/gpu"], 1_796_000_100.0)
    metrics.update(ledger, SETTINGS, 1_796_000_100.0)
    text = generate_latest(metrics.registry).decode()
    assert "aifacility_usage_cpu_cores{" not in text and "aifacility_usage_gpu_equivalents{" not in text
    ledger.close()


def _brute_force(records: list[UsageRecord], start: datetime, end: datetime, now: datetime) -> dict[Any, float]:
    """Unit-hours per (group, resource), record by record in Python: what the report must equal."""
    out: dict[Any, float] = {}
    for r in records:
        lo = max(r.start, start)
        hi = min(r.end or now, end)
        if hi > lo:
            key = (r.group, r.resource)
            out[key] = out.get(key, 0.0) + r.quantity * (hi - lo).total_seconds() / 3600
    return out


def test_reports_from_the_daily_roll_up_equal_record_by_record_sums(ledger_url: str) -> None:
    import random

    rnd = random.Random(7)
    base = datetime(2026, 11, 20, tzinfo=UTC)
    records = []
    for n in range(300):
        start = base + timedelta(minutes=rnd.randrange(0, 20 * 24 * 60))
        length = timedelta(minutes=rnd.choice([0, 1, 59, 600, 1440, 3000, 7 * 1440]))
        closed = rnd.random() < 0.85
        records.append(rec(f"r{n}", group=rnd.choice(["physics", "cms", "ml"]),
                           resource=rnd.choice(["cpu", "memory", "gpu"]), quantity=rnd.choice([0.5, 1, 4]),
                           start=start.isoformat(), end=(start + length).isoformat() if closed else None))
    ledger = Ledger(ledger_url)
    # loaded in two batches, the second closing some open ones (the roll-up follows closures too)
    ledger.ingest(records[:150])
    closing = [rec(r.id, group=r.group, resource=r.resource, quantity=r.quantity, start=r.start.isoformat(),
                   end=(r.start + timedelta(hours=30)).isoformat()) for r in records[:150] if r.end is None]
    ledger.ingest(records[150:] + closing)
    by_id = {r.id: r for r in records}
    for c in closing:
        by_id[c.id] = c
    now = datetime(2026, 12, 14, 12, 30, tzinfo=UTC)
    periods = [(datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC)),  # whole days
               (datetime(2026, 11, 25, 7, 13, tzinfo=UTC), datetime(2026, 12, 5, 18, 1, tzinfo=UTC)),  # edges
               (datetime(2026, 12, 1, 3, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC)),  # within a day
               (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),  # whole months
               # months, days and hours: partial days, then whole days, whole months, whole days, a partial day
               (datetime(2026, 10, 3, 5, 17, tzinfo=UTC), datetime(2027, 1, 10, 13, 2, tzinfo=UTC)),
               (datetime(2026, 11, 30, 22, tzinfo=UTC), datetime(2026, 12, 2, 1, tzinfo=UTC))]
    with ledger.engine.connect() as conn:
        for start, end in periods:
            rep = report.build(conn, "group", start, end, SETTINGS, now=now)
            got = {(r.key, r.resource): r.hours for r in rep.rows}
            want = _brute_force(list(by_id.values()), start, end, now)
            assert got.keys() == {k for k, v in want.items() if v > 0}, (start, end)
            for key, hours in want.items():
                assert got[key] == pytest.approx(hours, rel=1e-9, abs=1e-6), (start, end, key)
    ledger.close()


def test_a_mig_slice_counts_its_share_of_a_gpu_by_the_profile_nvidia_names() -> None:
    settings = Accounting()
    assert report.mig_fraction("3g.40gb", settings) == pytest.approx(3 / 7)
    assert report.mig_fraction("1g.10gb.me", settings) == pytest.approx(1 / 7)  # media extensions: still 1 slice
    assert report.mig_fraction("1c.3g.40gb", settings) == pytest.approx(1 / 7)  # 1 compute slice of a 3g instance
    assert report.mig_fraction("7g.80gb", settings) == 1.0
    assert report.mig_fraction("3g.40gb", Accounting(mig_fraction={"3g.40gb": 0.5})) == 0.5
