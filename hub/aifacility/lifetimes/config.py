"""`configure(c, facility)`: everything the hub needs for session lifetimes, in one call from the hub config.

- service `lifetimes` (REST API + extend page, under /services/lifetimes/),
- service `lifetimes-culler` (jupyterhub-idle-culler with our arbiter: stops expired and idle sessions),
- custom scopes `custom:lifetimes:read` / `custom:lifetimes:extend`: every user holds them for their own servers,
  admins (IAM admin groups, `Authenticator.admin_users`) for all,
- roles with the least scopes each service needs,
- the home page template with the countdown and the Extend button.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from aifacility.facility.model import Facility
from aifacility.hubconfig import add_spawner_environment, current, hub_data_dir, service_facility_file
from aifacility.launcher.supervisor import free_port
from aifacility.lifetimes.hubpages import HubSessions
from aifacility.lifetimes.service.handlers import EXTEND, READ
from aifacility.lifetimes.store import DB_ENV, DB_NAME, ExtensionStore

SERVICE = "lifetimes"
CULLER = "lifetimes-culler"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def configure(c: Any, facility: Facility, *, data_dir: str | os.PathLike[str] | None = None,
              port: int | None = None, url: str | None = None, base_url: str = "/") -> None:
    """Add the lifetimes services, scopes, roles and templates to the JupyterHub config `c`.

    `data_dir` is the hub's data directory (default `$AIFACILITY_HUB_DATA`): the extension store and the
    facility the services enforce live there. `url` is where the proxy and the sessions reach the service
    (default `$AIFACILITY_LIFETIMES_URL`; on Kubernetes e.g. `http://hub:10101` with that port on the hub's
    Service); without it the service listens on `http://127.0.0.1:<port>`, `port` defaulting to
    `$AIFACILITY_LIFETIMES_PORT`, else a free port. Call it after `Authenticator.admin_users` is set.
    Inside the session, the JupyterLab extension (extensions/aifacility_lab) shows the schedule and extends it.
    """
    data = hub_data_dir(data_dir)
    store = ExtensionStore(data / DB_NAME)
    facility_file = service_facility_file(data, SERVICE, facility)
    url = (url or os.environ.get("AIFACILITY_LIFETIMES_URL") or "").rstrip("/")
    if not url:
        raw = os.environ.get("AIFACILITY_LIFETIMES_PORT") or "0"
        if not raw.isdigit() or int(raw) > 65535:
            raise ValueError(f"AIFACILITY_LIFETIMES_PORT must be a TCP port number, not {raw!r}")
        port = port or int(raw) or free_port()
        url = f"http://127.0.0.1:{port}"
    env = {"AIFACILITY_FACILITY": str(facility_file), DB_ENV: str(store.path), "PYTHONUNBUFFERED": "1"}

    c.JupyterHub.custom_scopes = {
        **current(c.JupyterHub, "custom_scopes", {}),
        READ: {"description": "See when your sessions end and why."},
        EXTEND: {"description": "Extend the lifetime of your sessions, up to the limit of their profile.",
                 "subscopes": [READ]},
    }
    s = facility.sessions
    c.JupyterHub.services = [*current(c.JupyterHub, "services", []), {
        "name": SERVICE,
        "url": url,
        "command": [sys.executable, "-m", "aifacility.lifetimes.service"],
        "environment": env,
        "display": False,  # reached through the Extend button, not the services menu
        # The service's OAuth tokens may carry the extend scope, intersected with what the user holds.
        "oauth_client_allowed_scopes": [EXTEND],
        "oauth_no_confirm": True,  # our own service: no consent page between "Extend" and the form
    }, {
        "name": CULLER,
        "command": [sys.executable, "-m", "aifacility.lifetimes.culler", f"--cull-every={s.check_every_seconds}",
                    # Only feeds the arbiter's ignored `inactive_limit`; the policy decides (see culler.py).
                    f"--timeout={int(s.accelerator_idle_timeout_minutes * 60)}", "--cull-users=False"],
        "environment": env,
    }]

    admins = sorted(current(c.Authenticator, "admin_users", set()))
    roles = list(current(c.JupyterHub, "load_roles", []))
    # Every user may reach the service, and read and extend their own sessions there (and nobody else's).
    access = f"access:services!service={SERVICE}"
    own = [access, f"{EXTEND}!user"]
    user_role = next((r for r in roles if r.get("name") == "user"), None)
    if user_role is None:
        roles.append({"name": "user", "scopes": ["self", *own]})
    else:
        user_role["scopes"] = [*user_role.get("scopes", ["self"]), *own]
    # The session's own token (JupyterHub's `server` role) may read and extend its user's sessions: the
    # JupyterLab extension's status bar does (up to the profile's cap, which the service enforces).
    server_role = next((r for r in roles if r.get("name") == "server"), None)
    if server_role is None:
        roles.append({"name": "server", "scopes": ["users:activity!user", "access:servers!server", *own]})
    else:
        server_role["scopes"] = [*server_role.get("scopes", []), *own]
    roles += [
        {"name": "lifetimes-admin", "description": "Read and extend everyone's session lifetimes",
         "scopes": [access, EXTEND], "users": admins, "groups": list(facility.iam.admin_groups)},
        # GET /users/{name} for one user's servers: started, last_activity, user_options.
        {"name": "lifetimes-service", "scopes": ["read:users:name", "read:servers"], "services": [SERVICE]},
        # What jupyterhub-idle-culler needs to list ready servers and stop them (its README), nothing more.
        {"name": "lifetimes-culler", "scopes": ["list:users", "read:users:activity", "read:servers",
                                                "delete:servers"], "services": [CULLER]},
    ]
    c.JupyterHub.load_roles = roles

    # Where sessions reach the service directly (the proxy does not strip prefixes, so the path is the same).
    add_spawner_environment(c, {"AIFACILITY_LIFETIMES_API": f"{url}/services/{SERVICE}/api"})

    c.JupyterHub.template_paths = [str(TEMPLATES), *current(c.JupyterHub, "template_paths", [])]
    page = f"{base_url.rstrip('/')}/services/{SERVICE}/"
    c.JupyterHub.template_vars = {**current(c.JupyterHub, "template_vars", {}),
                                  "aifacility_lifetimes": HubSessions(facility, store, page)}
