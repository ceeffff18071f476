"""The usage records of a ledger, or of a running facility's (the ledger `aifacility up` keeps in its state dir), by
id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.schema import usage
from aifacility.launcher.components import accounting_db


def ledger_rows(url: str) -> dict[str, Any]:
    """Every usage record of the ledger at `url`, by id."""
    ledger = Ledger(url)
    try:
        with ledger.engine.connect() as conn:
            return {r.id: r for r in conn.execute(select(usage))}
    finally:
        ledger.close()


def usage_records(state_dir: str | Path) -> dict[str, Any]:
    return ledger_rows(accounting_db(Path(state_dir)))
