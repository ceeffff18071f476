"""`aifacility accounting ingest|collect|sacct|condor|apel` and `aifacility report`: the ledger from the command
line (admins).

Exit status: 0 done; 1 some lines of an ingested file were rejected (the good ones are loaded); 2 bad usage or
a ledger that cannot be opened.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aifacility.accounting.ledger import Ledger, LedgerError, default_url
from aifacility.accounting.record import BadLine, UsageRecord, parse_lines
from aifacility.accounting.report import BY, ReportError
from aifacility.accounting.site import SiteError

MAX_FILE_BYTES = 2 * 1024**3


def _moment(text: str) -> datetime:
    """`2026-12-01` (UTC midnight) or an RFC 3339 time with a zone."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z for UTC)")
    return moment


def _month(text: str) -> tuple[int, int]:
    try:
        year, month = (int(x) for x in text.split("-"))
        if not 1 <= month <= 12 or not 1970 <= year <= 9999:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (YYYY-MM)") from None
    return year, month


def _settings(args: argparse.Namespace) -> Any:
    from aifacility.facility.loader import load_facility

    return load_facility(args.facility).accounting


def _cmd_ingest(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            print(f"aifacility: {path} is larger than 2 GiB; split it", file=sys.stderr)
            return 2
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"aifacility: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    good: list[UsageRecord] = []
    bad: list[BadLine] = []
    for item in parse_lines(lines):
        (bad if isinstance(item, BadLine) else good).append(item)  # type: ignore[arg-type]
    for b in bad:
        print(f"{path}: {b}", file=sys.stderr)
    ledger = Ledger(args.db)
    try:
        result = ledger.ingest(good)
    finally:
        ledger.close()
    print(f"{result.inserted} record(s) loaded, {result.closed} open record(s) closed, {result.unchanged} already "
          f"known, {len(bad)} line(s) rejected")
    return 1 if bad else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from aifacility.accounting import render, report

    settings = _settings(args)
    ledger = Ledger(args.db)
    try:
        with ledger.engine.connect() as conn:
            rep = report.build(conn, args.by, args.start, args.end, settings)
            if args.format == "csv":
                text = render.to_csv(rep)
            elif args.format == "json":
                text = render.to_json(rep)
            else:
                days = report.daily(conn, args.start, args.end, settings)
                groups = rep if args.by == "group" else report.build(conn, "group", args.start, args.end, settings)
                text = render.to_html(rep, render.plots(rep, days, groups))
    finally:
        ledger.close()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_apel(args: argparse.Namespace) -> int:
    from aifacility.accounting import apel

    settings = _settings(args)
    year, month = args.month
    ledger = Ledger(args.db)
    try:
        with ledger.engine.connect() as conn:
            if args.record == "summary":
                sys.stdout.write(apel.summaries(conn, year, month, settings))
            else:
                sys.stdout.write(apel.accelerators(conn, year, month, settings))
    finally:
        ledger.close()
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    import time

    from aifacility.accounting.pods import PodCollector, kube_readers
    from aifacility.facility.loader import load_facility

    facility = load_facility(args.facility)
    pods, nodes, workloads = kube_readers(args.kubeconfig, args.namespace or [facility.namespace])
    ledger = Ledger(args.db)
    energy = None
    if args.dcgm_url:
        from aifacility.accounting.dcgm import exporter_reader

        energy = exporter_reader(args.dcgm_url)
    collector = PodCollector(ledger, facility, pods, nodes, workloads, energy)
    metrics = None
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        from aifacility.accounting.metrics import UsageMetrics

        metrics = UsageMetrics()
        start_http_server(args.metrics_port, addr=args.metrics_address, registry=metrics.registry)
    try:
        while True:
            swept_at = time.time()
            result = collector.sweep(swept_at)
            if metrics is not None:
                metrics.update(ledger, facility.accounting, swept_at)
            print(f"{result.inserted} new, {result.closed} closed, {result.unchanged} unchanged", flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    finally:
        ledger.close()


def _sweep_until_stopped(collector: Any, ledger: Ledger, args: argparse.Namespace) -> int:
    """Sweep every --interval seconds (once with --once); a site that cannot be reached is tried again later (the
    watermark waits for it), except with --once, where it is the error."""
    import time

    try:
        while True:
            try:
                result = collector.sweep()
                print(f"{result.inserted} new, {result.closed} closed, {result.unchanged} unchanged", flush=True)
            except SiteError as exc:
                if args.once:
                    raise
                print(f"aifacility: {exc}; trying again in {args.interval:.0f} s", file=sys.stderr, flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    finally:
        ledger.close()


def _cmd_sacct(args: argparse.Namespace) -> int:
    import shlex

    from aifacility.accounting.sacct import SacctCollector, run_sacct

    ledger = Ledger(args.db)
    return _sweep_until_stopped(SacctCollector(ledger, args.site, run_sacct(shlex.split(args.via or ""))), ledger,
                                args)


def _cmd_condor(args: argparse.Namespace) -> int:
    from aifacility.accounting.condor import CondorCollector, schedd_reader

    ledger = Ledger(args.db)
    return _sweep_until_stopped(CondorCollector(ledger, args.site, schedd_reader(args.schedd, args.pool)), ledger,
                                args)


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, help=f"the ledger's database URL (default: $AIFACILITY_ACCOUNTING_DB, "
                                                f"else {default_url()})")


def _site_collector(asub: Any, name: str, what: str) -> argparse.ArgumentParser:
    """The options every batch-site collector takes (site.py)."""
    p: argparse.ArgumentParser = asub.add_parser(name, help=f"{what}, every --interval seconds")
    _db(p)
    p.add_argument("--site", required=True, help="the site's name, as its virtual node's aifacility.io/site label "
                                                 "(list it in the facility's accounting.batch_accounted_sites)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between sweeps (default 60)")
    p.add_argument("--once", action="store_true", help="one sweep, then exit")
    return p


def add_parsers(sub: Any) -> None:
    acc = sub.add_parser("accounting", help="the usage ledger: load records, export APEL", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = acc.add_subparsers(dest="accounting_command", required=True)
    ing = asub.add_parser("ingest", help="load usage records from a JSON-lines file (exactly once)")
    _db(ing)
    ing.add_argument("file", help="one JSON record per line: id, user, group, kind, resource, model, quantity, "
                                  "start, end, site")
    ing.set_defaults(func=_cmd_ingest)
    col = asub.add_parser("collect", help="record the usage of the cluster's pods (notebooks, jobs, Dask workers, "
                                          "offloaded jobs), every --interval seconds")
    _db(col)
    col.add_argument("--kubeconfig", help="default: the in-cluster service account")
    col.add_argument("--namespace", action="append", help="namespaces to watch (default: the facility's)")
    col.add_argument("--interval", type=float, default=15.0, help="seconds between sweeps (default 15)")
    col.add_argument("--once", action="store_true", help="one sweep, then exit")
    col.add_argument("--metrics-port", type=int, help="serve Prometheus metrics of current usage on this port")
    col.add_argument("--metrics-address", default="127.0.0.1", help="address for the metrics (default 127.0.0.1)")
    col.add_argument("--facility", help="facility file (accelerator resources)")
    col.add_argument("--dcgm-url", action="append", metavar="URL",
                     help="a DCGM exporter's /metrics: measured GPU energy for the pods' GPUs (repeat per node)")
    col.set_defaults(func=_cmd_collect)
    sa = _site_collector(asub, "sacct", "record the offloaded jobs of a SLURM site from its accounting (sacct)")
    sa.add_argument("--via", help="a command that reaches the site's submit host, e.g. 'ssh edge-node' (default: "
                                  "run sacct here, SLURM_CONF as set)")
    sa.set_defaults(func=_cmd_sacct)
    co = _site_collector(asub, "condor", "record the offloaded jobs of an HTCondor site from its schedd's queue "
                                         "and history")
    co.add_argument("--schedd", help="the schedd's name (default: the local schedd of this HTCondor configuration)")
    co.add_argument("--pool", help="the collector that locates --schedd (default: this configuration's)")
    co.set_defaults(func=_cmd_condor)
    ap = asub.add_parser("apel", help="APEL summary or accelerator records for one month")
    _db(ap)
    ap.add_argument("--month", type=_month, required=True, metavar="YYYY-MM")
    ap.add_argument("--record", choices=["summary", "accelerator"], default="summary")
    ap.add_argument("--facility", help="facility file (site name, MIG fractions)")
    ap.set_defaults(func=_cmd_apel)

    rep = sub.add_parser("report", help="usage per user, group, resource, site or model over a period")
    _db(rep)
    rep.add_argument("--from", dest="start", type=_moment, required=True, metavar="DATE",
                     help="start (YYYY-MM-DD as UTC midnight, or RFC 3339)")
    rep.add_argument("--to", dest="end", type=_moment, required=True, metavar="DATE", help="end (exclusive)")
    rep.add_argument("--by", choices=BY, default="group")
    rep.add_argument("--format", choices=["csv", "json", "html"], default="csv")
    rep.add_argument("--facility", help="facility file (power figures, grid intensity, MIG fractions)")
    rep.add_argument("-o", "--output", help="write to this file instead of standard output")
    rep.set_defaults(func=_cmd_report)


def run(func: Any, args: argparse.Namespace) -> int:
    """Errors a person can act on, as one line and exit status 2."""
    try:
        return int(func(args))
    except (LedgerError, ReportError, SiteError, ValueError) as exc:
        print(f"aifacility: {exc}", file=sys.stderr)
        return 2
