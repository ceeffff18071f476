"""The two generated parts of the umbrella chart, kept in step with the facility model and the demo facility.

- `values.schema.json`: a hand-written root plus the facility file's schema from
  `aifacility.facility.model.Facility`, so that `helm install/lint/template` reject a typo in `facility:` the same
  way `aifacility check` does (cross-field checks, such as a profile naming an unknown image, stay with the
  model: helm cannot run them);
- the `facility:` block of `values.yaml`: the demo facility with the values a production site must set (its
  name, the IAM issuer, the images it built), comments included.

After a change of the model or of the demo facility, regenerate both with

    .venv/bin/python tests/deploy/chart_sources.py --write
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from aifacility.facility.model import Facility

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "charts" / "aifacility" / "values.schema.json"
VALUES_PATH = REPO / "charts" / "aifacility" / "values.yaml"
DEMO_PATH = REPO / "hub" / "aifacility" / "demo" / "facility.yaml"
# The facility block sits between these two lines of values.yaml.
BLOCK_START = "facility:\n"
BLOCK_END = "\n# --- subcharts"
# What a production site sets differently from the demo: (pattern on the demo's line, replacement).
SITE_VALUES = [
    (r"^name: demo$", "name: aifacility"),
    (r"^  issuer: .*$",
     "  issuer: https://iam.example.org/   # SET THIS: your INDIGO IAM issuer (its /.well-known/openid-configuration)"),
    (r"^(    image: )\S+/notebook-(ml|hep):\S+$",
     r"\1registry.example.org/aifacility/notebook-\2:0.1.0   # built from images/notebook-\2"),
]


def _draft07_refs(node: Any) -> Any:
    """Pydantic writes `$defs` (2020-12); draft-07 keeps shared definitions under `definitions`."""
    if isinstance(node, dict):
        return {k: (v.replace("#/$defs/", "#/definitions/") if k == "$ref" and isinstance(v, str)
                    else _draft07_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_draft07_refs(v) for v in node]
    return node


def _subchart(description: str, *, toggled: bool) -> dict[str, Any]:
    # A subchart's values are checked by its own schema when helm renders it; here only the shape and the switch.
    props: dict[str, Any] = {"enabled": {"type": "boolean"}} if toggled else {}
    return {"type": "object", "description": description, "properties": props}


def values_schema() -> dict[str, Any]:
    facility = _draft07_refs(Facility.model_json_schema())
    definitions = facility.pop("$defs", {})
    facility["description"] = "The facility file (the schema of `aifacility check`), stored in the ConfigMap " \
                              "aifacility-facility and mounted into the hub."
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "aifacility umbrella chart values",
        "type": "object",
        "additionalProperties": False,
        "required": ["oidc", "rbac", "facility", "jupyterhub"],
        "properties": {
            "global": {"type": "object", "description": "Helm's values shared with every subchart."},
            "oidc": {
                "type": "object", "additionalProperties": False, "required": ["clientSecret"],
                "properties": {"clientSecret": {
                    "type": "string",
                    "description": "The IAM client secret; empty: use the existing Secret aifacility-oidc."}},
            },
            "rbac": {
                "type": "object", "additionalProperties": False, "required": ["create"],
                "properties": {"create": {"type": "boolean"}},
            },
            "accounting": {
                "type": "object", "additionalProperties": False,
                "description": "The accounting collector (docs/admin/accounting.md).",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "image": {"type": "string", "minLength": 1},
                    "databaseSecret": {"type": "string", "minLength": 1, "maxLength": 253,
                                       "description": "A Secret with the key `url`: the ledger's database URL."},
                    "intervalSeconds": {"type": "integer", "minimum": 1, "maximum": 3600},
                    "metricsPort": {"type": "integer", "minimum": 1024, "maximum": 65535},
                    "resources": {"type": "object"},
                    "grafanaDashboard": {"type": "boolean"},
                    "dcgmExporterUrls": {
                        "type": "array", "maxItems": 1000,
                        "items": {"type": "string", "pattern": "^https?://[^\\s]+$", "maxLength": 2048},
                        "description": "DCGM exporters' /metrics URLs: measured GPU energy for the pods' GPUs."},
                },
            },
            "hubState": {
                "type": "object", "additionalProperties": False, "required": ["size"],
                "description": "The facility's own state beside the hub (quota reservations, lifetimes, policies).",
                "properties": {
                    "size": {"type": "string", "pattern": "^[0-9]+(Mi|Gi|Ti)$"},
                    "storageClassName": {"type": "string", "maxLength": 253,
                                         "description": "Empty: the cluster's default class."},
                },
            },
            "facility": facility,
            "jupyterhub": _subchart("Zero to JupyterHub 4.4.0 values.", toggled=False),
            "dask-gateway": _subchart("Dask Gateway 2026.3.0 values.", toggled=True),
            "interlink": _subchart("interLink chart values (one virtual node).", toggled=True),
        },
        "definitions": definitions,
    }


def render_schema() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=False) + "\n"


def facility_block() -> str:
    """The demo facility with the site values, indented under `facility:`."""
    lines = DEMO_PATH.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("apiVersion:"))  # after the header comment
    out = []
    applied = [0] * len(SITE_VALUES)
    for line in lines[start:]:
        for n, (pattern, repl) in enumerate(SITE_VALUES):
            line, count = re.subn(pattern, repl, line)
            applied[n] += count
        out.append(f"  {line}" if line.strip() else "")
    missing = [SITE_VALUES[n][0] for n, count in enumerate(applied) if not count]
    if missing:
        raise ValueError(f"{DEMO_PATH}: no line matches {missing}; update SITE_VALUES in {__file__}")
    return "\n".join(out) + "\n"


def render_values() -> str:
    text = VALUES_PATH.read_text()
    head, rest = text.split(BLOCK_START, 1)
    _old, tail = rest.split(BLOCK_END, 1)
    return head + BLOCK_START + facility_block() + BLOCK_END + tail


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        SCHEMA_PATH.write_text(render_schema())
        VALUES_PATH.write_text(render_values())
        print(f"wrote {SCHEMA_PATH.relative_to(REPO)} and the facility block of {VALUES_PATH.relative_to(REPO)}")
    else:
        sys.stdout.write(render_schema())
