"""The ledger: usage records in SQLite (default) or PostgreSQL (by URL), loaded exactly once.

Re-sending a record (same `id`) changes nothing, except that an open record (no `end`) is closed by a later
one that has an `end`: a collector that restarts sends what it saw again without counting it twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, update

from aifacility.accounting import rollup
from aifacility.accounting.record import UsageRecord
from aifacility.accounting.schema import collector_state, measured_energy, usage
from aifacility.database import DatabaseError, open_database

MIGRATIONS = Path(__file__).parent / "migrations"
DB_ENV = "AIFACILITY_ACCOUNTING_DB"
_CHUNK = 500  # ids per lookup (SQLite's default bound-parameter limit is 32766)


class LedgerError(DatabaseError):
    """The ledger cannot be opened (bad URL, unreachable server); the message says which and why."""


def default_url() -> str:
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "aifacility"
    return f"sqlite:///{data / 'accounting.sqlite'}"


@dataclass
class IngestResult:
    inserted: int = 0
    closed: int = 0  # open records that this load ended
    unchanged: int = 0  # already in the ledger: not counted again


def _row(r: UsageRecord) -> dict[str, object]:
    return {"id": r.id, "user_name": r.user, "group_name": r.group, "kind": r.kind, "resource": r.resource,
            "model": r.model, "quantity": r.quantity, "start_ts": r.start.timestamp(),
            "end_ts": None if r.end is None else r.end.timestamp(), "site": r.site}


class Ledger:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        try:
            self.engine: Engine = open_database(self.url, "the ledger", MIGRATIONS)
        except DatabaseError as e:
            raise LedgerError(str(e)) from None

    def close(self) -> None:
        self.engine.dispose()

    def open_ids(self, prefix: str) -> list[str]:
        """Ids of the open records whose id starts with `prefix` (a collector's own)."""
        with self.engine.connect() as conn:
            q = select(usage.c.id).where(usage.c.end_ts.is_(None), usage.c.id.startswith(prefix, autoescape=True))
            return [row.id for row in conn.execute(q)]

    def close_records(self, ids: Iterable[str], end: float) -> int:
        """End these open records at `end` (epoch seconds; never before their start)."""
        closed = 0
        totals = rollup.Totals()
        with self.engine.begin() as conn:
            for i in ids:
                row = conn.execute(select(usage).where(usage.c.id == i, usage.c.end_ts.is_(None))).first()
                if row is not None:
                    at = max(end, float(row.start_ts))
                    conn.execute(update(usage).where(usage.c.id == i).values(end_ts=at))
                    totals.add(row._mapping, at)
                    closed += 1
            totals.upsert(conn)
        return closed

    def add_measured_energy(self, samples: Iterable[tuple[str, str, float]]) -> int:
        """Counter samples (record id, device, mJ) of the devices records hold: each adds what the counter
        rose since the record's last sample of that device (a counter that went back, a device reset, restarts
        from there). Returns how many samples added energy."""
        added = 0
        with self.engine.begin() as conn:
            for record_id, device, counter in samples:
                key = (measured_energy.c.record_id == record_id) & (measured_energy.c.device == device)
                last = conn.execute(select(measured_energy.c.last_mj).where(key)).scalar()
                if last is None:
                    conn.execute(measured_energy.insert().values(record_id=record_id, device=device, joules=0.0,
                                                                 last_mj=counter))
                    continue
                rise = counter - float(last)
                values: dict[str, object] = {"last_mj": counter}
                if rise > 0:
                    values["joules"] = measured_energy.c.joules + rise / 1000
                    added += 1
                conn.execute(update(measured_energy).where(key).values(**values))
        return added

    def watermark(self, name: str) -> float | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(collector_state.c.watermark).where(collector_state.c.name == name)).scalar()
            return None if value is None else float(value)

    def set_watermark(self, name: str, value: float) -> None:
        with self.engine.begin() as conn:
            if conn.execute(update(collector_state).where(collector_state.c.name == name)
                            .values(watermark=value)).rowcount == 0:
                conn.execute(collector_state.insert().values(name=name, watermark=value))

    def ingest(self, records: Iterable[UsageRecord]) -> IngestResult:
        """Load records in one transaction: all of them or, on an error, none."""
        result = IngestResult()
        batch: dict[str, UsageRecord] = {}
        for r in records:
            prev = batch.get(r.id)
            if prev is None or (prev.end is None and r.end is not None):
                batch[r.id] = r  # within one load, the closing record wins
            else:
                result.unchanged += 1
        ids = list(batch)
        with self.engine.begin() as conn:
            known: dict[str, float | None] = {}
            for at in range(0, len(ids), _CHUNK):
                rows = conn.execute(select(usage.c.id, usage.c.end_ts).where(usage.c.id.in_(ids[at:at + _CHUNK])))
                known.update({row.id: row.end_ts for row in rows})
            new = [_row(batch[i]) for i in ids if i not in known]
            totals = rollup.Totals()
            for row in new:
                if row["end_ts"] is not None:
                    totals.add(row, float(row["end_ts"]))  # type: ignore[arg-type]
            for at in range(0, len(new), _CHUNK):
                conn.execute(usage.insert(), new[at:at + _CHUNK])
            result.inserted = len(new)
            for i in ids:
                if i not in known:
                    continue
                r = batch[i]
                if known[i] is None and r.end is not None:
                    stored = conn.execute(select(usage).where(usage.c.id == i)).one()
                    end = max(r.end.timestamp(), float(stored.start_ts))
                    conn.execute(update(usage).where(usage.c.id == i, usage.c.end_ts.is_(None)).values(end_ts=end))
                    totals.add(stored._mapping, end)
                    result.closed += 1
                else:
                    result.unchanged += 1
            totals.upsert(conn)
        return result
