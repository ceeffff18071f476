# The one JupyterHub configuration of aifacility, used by `aifacility up` and by the Helm chart alike.
#
# Everything site-specific comes from the facility file (AIFACILITY_FACILITY); the environment only says where
# things are (ports, state directory, secrets), which `aifacility up` or the chart's Deployment sets.
# ruff: noqa: F821 - `c` is the traitlets config object JupyterHub injects.
import os
from pathlib import Path

from aifacility.facility import load_facility

env = os.environ.get
facility = load_facility(env("AIFACILITY_FACILITY"))
data = Path(env("AIFACILITY_HUB_DATA", "/srv/jupyterhub"))
data.mkdir(parents=True, exist_ok=True)

# --- network: the public proxy address, the hub's internal API and the proxy's REST API -----------------------
c.JupyterHub.ip = env("AIFACILITY_PUBLIC_IP", "127.0.0.1")
c.JupyterHub.port = int(env("AIFACILITY_PUBLIC_PORT", "8000"))
c.JupyterHub.hub_ip = env("AIFACILITY_HUB_IP", "127.0.0.1")
c.JupyterHub.hub_port = int(env("AIFACILITY_HUB_PORT", "8081"))
if env("AIFACILITY_HUB_CONNECT_IP"):
    c.JupyterHub.hub_connect_ip = env("AIFACILITY_HUB_CONNECT_IP")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('AIFACILITY_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.should_start = env("AIFACILITY_EXTERNAL_PROXY", "") != "1"

# --- state: the database and secrets live in the hub's data directory (a PVC in the chart) ---------------------
c.JupyterHub.db_url = env("AIFACILITY_HUB_DB_URL", f"sqlite:///{data / 'jupyterhub.sqlite'}")
c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
# Stopping the hub stops the users' servers only in the embedded facility: on a real cluster the pods outlive
# hub restarts and upgrades (as in Zero to JupyterHub).
c.JupyterHub.cleanup_servers = env("AIFACILITY_CLEANUP_SERVERS", "1") == "1"
c.JupyterHub.last_activity_interval = 60

# --- secrets at rest and in the log: database and cookie secret 0600, no session identifiers in the hub log ----
from aifacility.secrecy import configure as configure_secrecy  # noqa: E402

configure_secrecy(c)

# --- the database: a sqlite file commits without an fsync per commit (WAL), see aifacility.hubdb ---------------
from aifacility.hubdb import configure as configure_hubdb  # noqa: E402

configure_hubdb(c)

# --- operations: a service token for the facility's own tools (tests, benchmarks, admin CLI) -------------------
# Appended, not assigned: the chart (z2jh) and the other parts below declare services and roles of their own.
if env("AIFACILITY_ADMIN_TOKEN"):
    c.JupyterHub.services = [*c.JupyterHub.get("services", []),
                             {"name": "aifacility-admin", "api_token": env("AIFACILITY_ADMIN_TOKEN")}]
    c.JupyterHub.load_roles = [*c.JupyterHub.get("load_roles", []),
                               {"name": "aifacility-admin", "services": ["aifacility-admin"],
                                "scopes": ["admin:users", "admin:servers", "admin:groups", "read:hub", "tokens",
                                           "read:services",
                                           # everyone's jobs (the custom scope comes with the jobs part below)
                                           "access:services!service=jobs", "custom:jobs:write",
                                           # the facility's policies and events (`aifacility admin`, the
                                           # benchmark)
                                           "access:services!service=admin", "custom:policies:write",
                                           "custom:events:write"]}]

# --- notebooks: profiles, storage, quotas, queued sessions on Kubernetes ---------------------------------------
from aifacility.spawner import configure as configure_spawner  # noqa: E402

configure_spawner(c, facility, data_dir=str(data))

# --- login: INDIGO IAM (OIDC); `aifacility up` points it at the embedded provider -----------------------------
from aifacility.auth import configure as configure_auth  # noqa: E402

public_url = env("AIFACILITY_PUBLIC_URL", f"http://{c.JupyterHub.ip}:{c.JupyterHub.port}")
configure_auth(
    c, facility,
    issuer=env("AIFACILITY_IAM_ISSUER") or facility.iam.issuer,
    client_secret=env("AIFACILITY_IAM_CLIENT_SECRET", ""),
    callback_url=f"{public_url.rstrip('/')}/hub/oauth_callback",
)

# --- sessions: lifetimes per profile, extensions, idle culling of accelerator sessions -------------------------
from aifacility.lifetimes import configure as configure_lifetimes  # noqa: E402

configure_lifetimes(c, facility)

# --- jobs: batch and notebook jobs from the sessions, created by the jobs service and queued by Kueue ----------
from aifacility.jobs import configure as configure_jobs  # noqa: E402

configure_jobs(c, facility, data_dir=str(data))

# --- admin: quota policies per group and user over the facility file, for the facility's admins -----------------
from aifacility.admin import configure as configure_admin  # noqa: E402

configure_admin(c, facility, data_dir=str(data))

# --- usage: everyone's own usage, and the facility's report for admins, from the accounting ledger -----------
if env("AIFACILITY_ACCOUNTING_DB"):
    from aifacility.accounting.hubconfig import configure as configure_usage

    configure_usage(c, db_url=env("AIFACILITY_ACCOUNTING_DB"))

# --- dask: dask-gateway as a hub service, clusters as pods whose workers Kueue admits ---------------------------
from aifacility.dask import configure as configure_dask  # noqa: E402

configure_dask(c, facility, data_dir=str(data))
