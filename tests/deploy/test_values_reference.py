"""The operator's reference pages hold to the code: docs/operator/values.md is what tests/deploy/values_reference.py
generates from the chart's values schema and values.yaml, and documents every value the schema accepts; the metric
names and Secrets docs/operator/operations.md names are the ones the parts serve and the chart reads."""

from __future__ import annotations

import json
import re

import yaml
from deploy_support import CHART, REPO
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


# --- docs/operator/operations.md -------------------------------------------------------------------------------------

OPERATIONS = REPO / "docs" / "operator" / "operations.md"
_HISTOGRAM = ("_bucket", "_count", "_sum")


def _served_names() -> set[str]:
    """What the facility's own collector, JupyterHub and the pinned Kueue expose, as Prometheus writes the names."""
    import jupyterhub.metrics
    from prometheus_client.metrics import MetricWrapperBase

    from aifacility.accounting.metrics import UsageMetrics
    from aifacility.embedded.controlplane.kueue_manager import kueue_chart_dir

    names = {f.name + ("_total" if f.type == "counter" else "") for f in UsageMetrics().registry.collect()}
    for metric in vars(jupyterhub.metrics).values():
        if isinstance(metric, MetricWrapperBase):
            base = metric._name  # with JupyterHub's prefix
            names |= {base, *(base + s for s in _HISTOGRAM)} if metric._type == "histogram" else {base}
    go = (kueue_chart_dir().parents[1] / "pkg" / "metrics" / "metrics.go").read_text()
    for name in re.findall(r'Subsystem:\s+constants\.KueueName,\s+Name:\s+"(\w+)"', go):
        names |= {f"kueue_{name}", *(f"kueue_{name}{s}" for s in _HISTOGRAM)}
    return names


def test_the_metrics_the_operations_page_names_are_served() -> None:
    text = OPERATIONS.read_text()
    named = set(re.findall(r"\b(?:aifacility|jupyterhub|kueue)_[a-z_]+[a-z]\b", text))
    assert {"aifacility_accounting_last_sweep_timestamp_seconds", "jupyterhub_server_spawn_duration_seconds_count",
            "kueue_pending_workloads"} <= named
    assert named <= _served_names(), named - _served_names()


def test_the_alert_rules_parse_and_use_served_metrics() -> None:
    block = OPERATIONS.read_text().split("### Alert rules", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert re.fullmatch(r"Aifacility[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]  # CamelCase, one prefix
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_the_secrets_the_operations_page_names_are_the_chart_s() -> None:
    text = OPERATIONS.read_text()
    section = text.split("## Secrets", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == 5
    chart = (CHART / "values.yaml").read_text() + "".join(p.read_text() for p in (CHART / "templates").iterdir())
    for name, key in rows:
        secret = re.search(r"`([a-z0-9-]+)`", name).group(1)  # type: ignore[union-attr]
        if secret == "hub":  # z2jh's own; the chart names its dask-gateway key
            assert "hub.services.dask-gateway.apiToken" in key and "apiTokenFromSecretName: hub" in chart
            continue
        assert secret in chart, secret
        first_key = re.search(r"`([a-z-]+)`", key).group(1)  # type: ignore[union-attr]
        assert re.search(rf"\b{secret}\b[\s\S]{{0,200}}\b{first_key}\b", chart), (secret, first_key)
