"""JupyterHub configuration for the usage service: `configure(c)` from jupyterhub_config.py."""

from __future__ import annotations

import os
import sys
from typing import Any

from aifacility.accounting.ledger import DB_ENV, default_url
from aifacility.hubconfig import add_spawner_environment, current
from aifacility.launcher.supervisor import free_port
from aifacility.quotas.store import DB_ENV as POLICY_DB_ENV
from aifacility.quotas.store import default_url as policy_db_url

SERVICE = "usage"


def configure(c: Any, *, db_url: str | None = None, facility_file: str | None = None, url: str | None = None) -> None:
    """Add the usage service (every user's own usage; the facility's report for admins). Every user may reach
    it; the service may read users (to know who is an admin). `url`: where the proxy reaches it (default:
    `$AIFACILITY_USAGE_URL`, else a free loopback port)."""
    url = (url or os.environ.get("AIFACILITY_USAGE_URL") or f"http://127.0.0.1:{free_port()}").rstrip("/")
    env = {DB_ENV: db_url or default_url(), POLICY_DB_ENV: policy_db_url(), "PYTHONUNBUFFERED": "1"}
    if facility_file or os.environ.get("AIFACILITY_FACILITY"):
        env["AIFACILITY_FACILITY"] = facility_file or os.environ["AIFACILITY_FACILITY"]
    c.JupyterHub.services = [*current(c.JupyterHub, "services", []), {
        "name": SERVICE,
        "url": url,
        "command": [sys.executable, "-m", "aifacility.accounting.service"],
        "environment": env,
        "oauth_no_confirm": True,
    }]
    roles = list(current(c.JupyterHub, "load_roles", []))
    access = f"access:services!service={SERVICE}"
    # Users, and their sessions' own tokens (the session's budget notice reads .../budgets).
    for role_name, base in (("user", ["self"]), ("server", ["users:activity!user", "access:servers!server"])):
        role = next((r for r in roles if r.get("name") == role_name), None)
        if role is None:
            roles.append({"name": role_name, "scopes": [*base, access]})
        else:
            role["scopes"] = [*role.get("scopes", base), access]
    roles.append({"name": "usage-service", "scopes": ["read:users"], "services": [SERVICE]})
    c.JupyterHub.load_roles = roles
    add_spawner_environment(c, {"AIFACILITY_USAGE_API": f"{url}/services/{SERVICE}"})
