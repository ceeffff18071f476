"""The usage record: what one notebook, job, Dask worker or offloaded job used of one resource, from when to when.

Quantities are in the resource's unit: cores (cpu), GiB (memory), devices (gpu, mig, fpga). `group` and `site`
are frozen when the usage starts (a later change of membership does not move past usage). `end` is None while
the usage goes on (an open record), and set by a later record with the same `id`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

Kind = Literal["notebook", "job", "dask", "offload"]
Resource = Literal["cpu", "memory", "gpu", "mig", "fpga"]
UNITS: dict[str, str] = {"cpu": "core", "memory": "GiB", "gpu": "GPU", "mig": "slice", "fpga": "FPGA"}
MAX_LINE_BYTES = 64 * 1024
_TEXT = r"^[^\x00-\x1f\x7f]+$"  # printable: no control characters (a record ends up in CSV and HTML)


class UsageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=256, pattern=_TEXT)
    user: str = Field(min_length=1, max_length=128, pattern=_TEXT)
    group: str = Field(min_length=1, max_length=128, pattern=_TEXT)
    kind: Kind
    resource: Resource
    model: str = Field(default="", max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")
    quantity: float = Field(gt=0, le=1_000_000)
    start: AwareDatetime
    end: AwareDatetime | None = None
    site: str = Field(default="local", min_length=1, max_length=128, pattern=_TEXT)

    @model_validator(mode="after")
    def _ends_after_start(self) -> UsageRecord:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end.isoformat()} is before start {self.start.isoformat()}")
        return self


class BadLine(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "record"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def parse_lines(lines: Iterable[str]) -> Iterator[UsageRecord | BadLine]:
    """Records from JSON lines (blank lines are skipped); a line that is not a valid record yields a BadLine."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line.encode()) > MAX_LINE_BYTES:
            yield BadLine(n, f"longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadLine(n, f"not JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(data, dict):
            yield BadLine(n, "not a JSON object")
            continue
        try:
            yield UsageRecord.model_validate(data)
        except ValidationError as exc:
            yield BadLine(n, _describe(exc))


def epoch(moment: datetime) -> float:
    return moment.timestamp()
