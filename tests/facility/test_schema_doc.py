"""The published JSON schema of the facility file is the model's.

Regenerate it with: aifacility schema > docs/facility.schema.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from aifacility.facility import demo_facility_path

DOC = Path(__file__).resolve().parents[2] / "docs" / "facility.schema.json"


def test_published_schema_is_current() -> None:
    out = subprocess.run([sys.executable, "-m", "aifacility.cli", "schema"], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == json.loads(DOC.read_text()), "run: aifacility schema > docs/facility.schema.json"


def test_demo_facility_validates_against_the_published_schema() -> None:
    jsonschema.validate(yaml.safe_load(demo_facility_path().read_text()), json.loads(DOC.read_text()))


def test_check_command(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "aifacility.cli", "check", str(demo_facility_path())],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "is valid" in ok.stdout
    bad = tmp_path / "f.yaml"
    bad.write_text("name: x\n")
    r = subprocess.run([sys.executable, "-m", "aifacility.cli", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"aifacility: {bad}: ") and "Traceback" not in r.stderr
