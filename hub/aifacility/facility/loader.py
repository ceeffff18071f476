"""Load and validate `facility.yaml`, reporting the first problem as `file: field: what is wrong`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from aifacility.facility.model import Facility


class FacilityError(Exception):
    """The facility file is missing, not YAML, or does not match the schema."""


DEMO_FACILITY = "demo/facility.yaml"


def demo_facility_path() -> Path:
    return Path(str(resources.files("aifacility").joinpath(DEMO_FACILITY)))


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_facility(path: str | os.PathLike[str] | None = None) -> Facility:
    """Read a facility file (default: `$AIFACILITY_FACILITY`, else the shipped demo facility)."""
    path = Path(path or os.environ.get("AIFACILITY_FACILITY") or demo_facility_path())
    try:
        text = path.read_text()
    except OSError as e:
        raise FacilityError(f"{path}: cannot read the facility file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise FacilityError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise FacilityError(f"{path}: the facility file must be a YAML mapping, not {type(data).__name__}")
    try:
        return Facility.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
        return_loc = _location(tuple(err["loc"]))
        raise FacilityError(f"{path}: {return_loc}: {msg}{more}") from None
