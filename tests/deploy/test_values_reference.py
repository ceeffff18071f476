"""docs/operator/values.md is what tests/deploy/values_reference.py generates from the chart's values schema and
values.yaml, and it documents every value the schema accepts."""

from __future__ import annotations

import json
import re

from deploy_support import CHART
from values_reference import DOC_PATH, key_comments, render

REGENERATE = "run: .venv/bin/python tests/deploy/values_reference.py --write"


def test_the_values_reference_is_current() -> None:
    assert DOC_PATH.read_text() == render(), REGENERATE


def test_every_value_of_the_schema_is_in_the_reference() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    doc = DOC_PATH.read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", doc, re.MULTILINE))
    sections = set(re.findall(r"^## `([^`]+)`$", doc, re.MULTILINE))
    assert sections == set(schema["properties"]) - {"global"}
    for key, node in schema["properties"].items():
        for name in node.get("properties", {}):
            assert f"{key}.{name}" in documented, (key, name)
    # The facility file's fields, down into its lists and maps.
    for path in ("facility.iam.issuer", "facility.profiles[].accelerator.name",
                 "facility.queues.groups.<name>.offload.<name>.cpu", "facility.storage.datasets[].mount_path"):
        assert path in documented, path


def test_the_reference_carries_the_comments_and_defaults_of_values_yaml() -> None:
    doc = DOC_PATH.read_text()
    (issuer,) = [line for line in doc.splitlines() if line.startswith("| `facility.iam.issuer` |")]
    assert "SET THIS" in issuer
    (interval,) = [line for line in doc.splitlines() if line.startswith("| `accounting.intervalSeconds` |")]
    assert "| `15` |" in interval and "≥ 1; ≤ 3600" in interval
    key = "jupyterhub.hub.extraEnv.AIFACILITY_IAM_CLIENT_SECRET.valueFrom.secretKeyRef.name"
    (secret,) = [line for line in doc.splitlines() if line.startswith(f"| `{key}` |")]
    assert "`\"aifacility-oidc\"`" in secret


def test_comments_are_read_from_keys_and_not_from_lists_or_block_text() -> None:
    text = """\
# about a
a:
  # about b
  b: 1   # and inline
  items:
    - name: x
      # not a key of the values
      c: 2
  text: |
    # not a comment
    d: 3

  # about e
  e: {f: 1}
# spaced away

g: true
"""
    assert key_comments(text) == {"a": "about a", "a.b": "about b and inline", "a.e": "about e"}
