"""`configure(c, facility)`: the admin service in the hub's configuration, in one call.

- service `admin` (web pages under /services/admin/, REST API under /services/admin/api/), with the hub's
  Kubernetes identity (it writes the groups' ClusterQueues);
- custom scopes `custom:policies:read` / `custom:policies:write`, and a role `facility-admins` holding them with
  access to the service: the hub's admin users and the facility's `iam.admin_groups`; `custom:events:write` for
  them and for the role `facility-organisers` (the facility's `iam.organiser_groups`). No one else reaches it;
- the join page of events' join codes (/hub/join);
- the least scopes the service needs from the hub: whether a group or user exists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from aifacility.accounting.ledger import DB_ENV as LEDGER_ENV
from aifacility.admin.hubpages import HubBudgets
from aifacility.admin.service.events import EVENTS
from aifacility.admin.service.handlers import READ, WRITE
from aifacility.events.join import JoinHandler
from aifacility.facility.model import Facility
from aifacility.hubconfig import current, hub_data_dir, service_facility_file
from aifacility.jobs.config import CLUSTER_ENV
from aifacility.launcher.supervisor import free_port
from aifacility.quotas.store import DB_ENV, default_url

SERVICE = "admin"
HUB_TEMPLATES = Path(__file__).parent / "hubtemplates"
ROLE = "facility-admins"
ORGANISERS = "facility-organisers"
EVENT_TEMPLATES = Path(__file__).parents[1] / "events" / "hubtemplates"
# The accounting ledger (budgets are kept only with it) and how often queues and budgets are checked.
PASSED_ENV = (LEDGER_ENV, "AIFACILITY_ADMIN_QUEUE_SYNC_SECONDS", "AIFACILITY_BUDGET_CHECK_SECONDS",
              "AIFACILITY_EVENT_CHECK_SECONDS")


def configure(c: Any, facility: Facility, *, data_dir: str | os.PathLike[str] | None = None,
              url: str | None = None) -> None:
    """Add the admin service, its scopes and role to the JupyterHub config `c`. `url`: where the proxy reaches it
    (default `$AIFACILITY_ADMIN_URL`, else a free loopback port). Call it after `Authenticator.admin_users` is
    set."""
    data = hub_data_dir(data_dir)
    facility_file = service_facility_file(data, SERVICE, facility)  # policies apply over exactly the hub's
    url = (url or os.environ.get("AIFACILITY_ADMIN_URL") or f"http://127.0.0.1:{free_port()}").rstrip("/")
    env = {"AIFACILITY_FACILITY": str(facility_file), DB_ENV: default_url(data), "PYTHONUNBUFFERED": "1",
           **{k: os.environ[k] for k in (*CLUSTER_ENV, *PASSED_ENV) if os.environ.get(k)}}
    if "quota_db" in c.FacilitySpawner:  # the spawner's reservations: which sessions hold accelerators
        env["AIFACILITY_QUOTA_DB"] = str(c.FacilitySpawner.quota_db)
    c.JupyterHub.custom_scopes = {
        **current(c.JupyterHub, "custom_scopes", {}),
        READ: {"description": "Read the facility's quota policies and their audit trail."},
        WRITE: {"description": "Change the facility's quota policies.", "subscopes": [READ]},
        EVENTS: {"description": "Run events (hackathons, schools): one's own as an organiser."},
    }
    c.JupyterHub.services = [*current(c.JupyterHub, "services", []), {
        "name": SERVICE,
        "url": url,
        "command": [sys.executable, "-m", "aifacility.admin.service"],
        "environment": env,
        "oauth_client_allowed_scopes": [WRITE],
        "oauth_no_confirm": True,
    }]
    # The budgets over each user on the hub's home page (admin/hubpages.py).
    c.JupyterHub.template_paths = [*current(c.JupyterHub, "template_paths", []), str(HUB_TEMPLATES),
                                   str(EVENT_TEMPLATES)]
    # An event's join codes become temporary accounts at /hub/join; IAM does not know them, so the
    # authenticator keeps them logged in while their event runs (auth.authenticator.IAMAuthenticator.event_db).
    c.JupyterHub.extra_handlers = [*current(c.JupyterHub, "extra_handlers", []),
                                   (r"/join", JoinHandler, {"policy_db": env[DB_ENV]})]
    c.IAMAuthenticator.event_db = env[DB_ENV]
    c.JupyterHub.template_vars = {**current(c.JupyterHub, "template_vars", {}),
                                  "aifacility_budgets": HubBudgets(env[DB_ENV])}
    admins = sorted(current(c.Authenticator, "admin_users", set()))
    c.JupyterHub.load_roles = [
        *current(c.JupyterHub, "load_roles", []),
        {"name": ROLE, "description": "Manage the facility's quota policies",
         "scopes": [f"access:services!service={SERVICE}", WRITE, EVENTS], "users": admins,
         "groups": list(facility.iam.admin_groups)},
        {"name": ORGANISERS, "description": "Run events (hackathons, schools) in the admin service",
         "scopes": [f"access:services!service={SERVICE}", EVENTS], "groups": list(facility.iam.organiser_groups)},
        # whether a group or user exists; stopping the sessions of a used-up budget; removing an event's
        # temporary accounts when it ends
        {"name": "admin-service", "scopes": ["read:groups:name", "read:users:name", "delete:servers", "admin:users"],
         "services": [SERVICE]},
    ]
