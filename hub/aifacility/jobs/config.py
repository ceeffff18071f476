"""`configure(c, facility)`: the jobs service in the hub's configuration, in one call.

- service `jobs` (REST API under /services/jobs/api/, the hub's Kubernetes identity),
- custom scopes `custom:jobs:read` / `custom:jobs:write`: every user (and every session's own token) holds them
  for their own jobs, admins for everyone's,
- the least scopes the service needs from the hub (a user's groups),
- `AIFACILITY_JOBS_API` in every session, where the client finds the service.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aifacility.auth.jobs import IAM_TOKENS_SCOPE, IAM_TOKENS_SCOPE_MODEL
from aifacility.facility.model import Facility
from aifacility.hubconfig import add_spawner_environment, current, hub_data_dir, service_facility_file
from aifacility.jobs.service.handlers import READ, WRITE
from aifacility.launcher.supervisor import free_port
from aifacility.quotas.store import DB_ENV as POLICY_DB_ENV
from aifacility.quotas.store import default_url as policy_db_url

SERVICE = "jobs"
# What the service needs from the hub's environment to reach the cluster (JupyterHub passes a managed service
# only PATH, LANG and a few more): its kubeconfig here, its service account's address in a pod.
CLUSTER_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def configure(c: Any, facility: Facility, *, data_dir: str | os.PathLike[str] | None = None,
              url: str | None = None) -> None:
    """Add the jobs service, its scopes and roles to the JupyterHub config `c`.

    `url`: where the proxy and the sessions reach the service (default `$AIFACILITY_JOBS_URL`, else
    `http://127.0.0.1:<free port>`). Call it after `Authenticator.admin_users` is set."""
    data = hub_data_dir(data_dir)
    facility_file = service_facility_file(data, SERVICE, facility)
    url = (url or os.environ.get("AIFACILITY_JOBS_URL") or f"http://127.0.0.1:{free_port()}").rstrip("/")
    env = {"AIFACILITY_FACILITY": str(facility_file), "PYTHONUNBUFFERED": "1",
           # the admin service's policies: a group's job quota as an admin last set it
           POLICY_DB_ENV: policy_db_url(data),
           **{k: os.environ[k] for k in CLUSTER_ENV if os.environ.get(k)}}

    c.JupyterHub.custom_scopes = {
        **current(c.JupyterHub, "custom_scopes", {}),
        READ: {"description": "List your batch jobs and read their status and output."},
        WRITE: {"description": "Submit and cancel batch jobs.", "subscopes": [READ]},
        IAM_TOKENS_SCOPE: IAM_TOKENS_SCOPE_MODEL,
    }
    c.JupyterHub.services = [*current(c.JupyterHub, "services", []), {
        "name": SERVICE,
        "url": url,
        "command": [sys.executable, "-m", "aifacility.jobs.service"],
        "environment": env,
        "display": False,
        "oauth_client_allowed_scopes": [WRITE],
        "oauth_no_confirm": True,
    }]
    admins = sorted(current(c.Authenticator, "admin_users", set()))
    access = f"access:services!service={SERVICE}"
    own = [access, f"{WRITE}!user"]
    roles = list(current(c.JupyterHub, "load_roles", []))
    # The session's token may also read its user's groups: the service then finds them in the token's identity
    # instead of asking the hub on every submission.
    for role_name, base, extra in (("user", ["self"], []),
                                   ("server", ["users:activity!user", "access:servers!server"],
                                    ["read:users:groups!user"])):
        role = next((r for r in roles if r.get("name") == role_name), None)
        if role is None:
            roles.append({"name": role_name, "scopes": [*base, *own, *extra]})
        else:
            role["scopes"] = [*role.get("scopes", base), *own, *extra]
    roles += [
        {"name": "jobs-admin", "description": "See, follow and cancel everyone's jobs",
         "scopes": [access, WRITE], "users": admins, "groups": list(facility.iam.admin_groups)},
        # GET /users/{name}: the groups a job may be charged to; /aifacility/token?user=: running jobs' fresh tokens.
        {"name": "jobs-service", "scopes": ["read:users:name", "read:users:groups", IAM_TOKENS_SCOPE],
         "services": [SERVICE]},
    ]
    c.JupyterHub.load_roles = roles
    add_spawner_environment(c, {"AIFACILITY_JOBS_API": f"{url}/services/{SERVICE}/api"})
