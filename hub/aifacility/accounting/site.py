"""What the batch-site collectors (sacct.py, condor.py) share: read a window from the watermark, load it once.

Each sweep asks the site for its records over [watermark - margin, now] (a site learns of a job's end a moment
after it happens; the exactly-once ledger makes the overlap harmless) and moves the watermark to now. The first
sweep of a site reads `first_window_seconds` back.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from aifacility.accounting.ledger import IngestResult, Ledger
from aifacility.accounting.record import UsageRecord

MARGIN_SECONDS = 600.0


class SiteError(RuntimeError):
    """The site could not be read (unreachable, or its tool refused); the message is the site's own."""


class SiteCollector(ABC):
    kind: str  # names the collector's watermark: `<kind>:<site>`

    def __init__(self, ledger: Ledger, site: str, first_window_seconds: float = 7 * 86400) -> None:
        self.ledger = ledger
        self.site = site
        self.name = f"{self.kind}:{site}"
        self.first_window_seconds = first_window_seconds

    @abstractmethod
    def fetch(self, since: float, until: float) -> list[UsageRecord]:
        """The site's records of the usage within [since, until] (epoch seconds)."""

    def sweep(self, now: float | None = None) -> IngestResult:
        until = time.time() if now is None else now
        last = self.ledger.watermark(self.name)
        since = (last - MARGIN_SECONDS) if last is not None else until - self.first_window_seconds
        result = self.ledger.ingest(self.fetch(since, until))
        self.ledger.set_watermark(self.name, until)
        return result
