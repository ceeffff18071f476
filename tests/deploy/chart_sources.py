"""The umbrella chart's `values.schema.json`: a hand-written root plus the facility file's schema from the model.

The facility part is generated from `aifacility.facility.model.Facility` so that `helm install/lint/template`
reject a typo in `facility:` the same way `aifacility check` does (cross-field checks, such as a profile naming
an unknown image, stay with the model: helm cannot run them). Regenerate after a model change with

    .venv/bin/python tests/deploy/chart_schema.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aifacility.facility.model import Facility

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "charts" / "aifacility" / "values.schema.json"


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
            "facility": facility,
            "jupyterhub": _subchart("Zero to JupyterHub 4.4.0 values.", toggled=False),
            "dask-gateway": _subchart("Dask Gateway 2026.3.0 values.", toggled=True),
            "kueue": _subchart("Kueue 0.19.2 values.", toggled=True),
            "interlink": _subchart("interLink chart values (one virtual node).", toggled=True),
        },
        "definitions": definitions,
    }


def render() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        SCHEMA_PATH.write_text(render())
        print(f"wrote {SCHEMA_PATH.relative_to(REPO)}")
    else:
        sys.stdout.write(render())
