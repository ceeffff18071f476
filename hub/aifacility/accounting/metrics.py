"""Prometheus metrics of what is in use now (the ledger's open records), per group, kind and site, in the
ecosystem's naming: base units (`_bytes`, `_cores`), one metric per unit, and the collector's own health."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UNITS
from aifacility.accounting.report import mig_fraction
from aifacility.accounting.schema import usage
from aifacility.facility.model import Accounting

_WHO = ["group", "kind", "site"]


class UsageMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cpu = Gauge("aifacility_usage_cpu_cores", "CPU cores held now (requests of running pods)", _WHO,
                         registry=r)
        self.memory = Gauge("aifacility_usage_memory_bytes", "Memory held now", _WHO, registry=r)
        self.accelerators = Gauge("aifacility_usage_accelerators", "GPUs, MIG slices and FPGAs held now",
                                  [*_WHO, "resource", "model"], registry=r)
        self.gpu_equivalents = Gauge("aifacility_usage_gpu_equivalents",
                                     "GPUs held now, MIG slices counted by their fraction of a GPU", _WHO, registry=r)
        self.sweeps = Counter("aifacility_accounting_sweeps", "Collector sweeps", registry=r)
        self.last_sweep = Gauge("aifacility_accounting_last_sweep_timestamp_seconds",
                                "When the collector last saw the cluster", registry=r)

    def update(self, ledger: Ledger, settings: Accounting, swept_at: float) -> None:
        q = (select(usage.c.group_name, usage.c.kind, usage.c.site, usage.c.resource, usage.c.model,
                    func.sum(usage.c.quantity).label("q"))
             .where(usage.c.end_ts.is_(None))
             .group_by(usage.c.group_name, usage.c.kind, usage.c.site, usage.c.resource, usage.c.model))
        with ledger.engine.connect() as conn:
            rows = list(conn.execute(q))
        for g in (self.cpu, self.memory, self.accelerators, self.gpu_equivalents):
            g.clear()  # what ended since the last sweep must not linger
        gpu_eq: dict[tuple[str, str, str], float] = {}
        for group, kind, site, resource, model, q in rows:
            who = (group, kind, site)
            if resource == "cpu":
                self.cpu.labels(*who).inc(q)
            elif resource == "memory":
                self.memory.labels(*who).inc(q * 2**30)
            elif resource in UNITS:
                self.accelerators.labels(*who, resource, model).inc(q)
                if resource in ("gpu", "mig"):
                    gpu_eq[who] = gpu_eq.get(who, 0.0) + q * (mig_fraction(model, settings) if resource == "mig"
                                                               else 1.0)
        for who, value in gpu_eq.items():
            self.gpu_equivalents.labels(*who).set(value)
        self.sweeps.inc()
        self.last_sweep.set(swept_at)
