"""dask-gateway's configuration from the facility file, and the gateway as a hub service.

`gateway_config(c, facility, ...)` fills a dask-gateway traitlets config: our backend (pods in the facility's
namespace), JupyterHub authentication (a session's own token; RBAC scope `access:services!service=dask-gateway`),
the built-in proxy under the hub's service prefix, the per-user options and their handler, idle timeout on.

`configure(c, facility)` adds to the hub's config what runs and reaches it:
- the managed service `dask-gateway` (`python -m aifacility.dask`): the hub starts and restarts it and gives it
  its API token; its proxy listens at the service's URL, so the hub's proxy also routes /services/dask-gateway/,
- the scope to use it for every user and every session's token (which may also read the user's groups, which
  the options handler needs),
- the variables with which `GatewayCluster()` in a session finds it and authenticates.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aifacility.dask.options import (
    GROUP_DEFAULT,
    NO_ACCELERATOR,
    check_budgets,
    dask_groups,
    default_group,
    plan,
    worker_accelerators,
)
from aifacility.facility.model import Facility
from aifacility.facility.quantity import parse_quantity
from aifacility.hubconfig import add_spawner_environment, current, hub_data_dir, service_facility_file
from aifacility.quotas.budgets import BudgetBook
from aifacility.quotas.policy import effective
from aifacility.quotas.store import DB_ENV as POLICY_DB_ENV
from aifacility.quotas.store import PolicyStore, policy_store
from aifacility.quotas.store import default_url as policy_db_url

SERVICE = "dask-gateway"
PREFIX = f"/services/{SERVICE}"
BACKEND = "aifacility.dask.backend.FacilityBackend"
# A scheduler is not queued, so only an image pull or a slow node delays it.
SCHEDULER_START_SECONDS = 300
CLUSTER_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
# The Dask sidebar of JupyterLab (dask-labextension) makes its "+ NEW" clusters through the gateway, as daskhub does.
LABEXTENSION_ENV = {"DASK_LABEXTENSION__FACTORY__MODULE": "dask_gateway",
                    "DASK_LABEXTENSION__FACTORY__CLASS": "GatewayCluster"}


def overrides(facility: Facility, user: Any, options: Any, policies: PolicyStore | None = None) -> dict[str, Any]:
    """The options handler: a user's choices checked against their groups, plus what only the facility decides
    (image, scheduler size, idle timeout), as FacilityClusterConfig traits. A DaskRefused becomes a 422 whose
    reason is its message (dask-gateway's process_cluster_options). With the admin service's `policies`, the
    quotas in force and the budgets apply, read at each request (a change needs no restart)."""
    if policies is not None:
        facility = effective(facility, policies.snapshot())
    p = plan(facility, user.name, user.groups, group=options.group, worker_cores=options.worker_cores,
             worker_memory=options.worker_memory, accelerator=options.accelerator)
    if policies is not None:
        check_budgets(BudgetBook(policies.engine).exhausted(user.name, [p.group]), p.accelerator)
    d = facility.dask
    return {"group": p.group, "user_groups": list(p.user_groups), "worker_cores": p.worker_cores,
            "worker_memory": p.worker_memory, "cluster_max_workers": p.max_workers,
            "max_clusters_per_user": p.max_clusters,
            "accelerator_resource": p.accelerator.resource if p.accelerator else "",
            "image": next(i.image for i in facility.images if i.name == (d.image or facility.images[0].name)),
            "scheduler_cores": d.scheduler_cores, "scheduler_memory": int(parse_quantity(d.scheduler_memory)),
            "idle_timeout": d.idle_timeout_minutes * 60}


def cluster_options(facility: Facility, policies: PolicyStore | None = None) -> Callable[[Any], Any]:
    """`Backend.cluster_options` as a function of the user: the form offers only their own groups and the
    accelerators those groups may use (under the policies in force, when the admin service keeps some)."""
    from dask_gateway_server.options import Float, Integer, Options, Select

    def for_user(user: Any) -> Options:
        in_force = effective(facility, policies.snapshot()) if policies is not None else facility
        groups = dask_groups(in_force, user.groups)
        accels = sorted({a.name for g in groups for a in worker_accelerators(in_force, g)})
        return Options(
            # "" for a user without a group: the handler then refuses with the reason, not a type error.
            Select("group", groups or [""], default=default_group(facility, groups) or "",
                   label="Group (its queue and quota)"),
            Integer("worker_cores", default=GROUP_DEFAULT, min=0, label="Cores per worker (0: the group's default)"),
            Float("worker_memory", default=GROUP_DEFAULT, min=0,
                  label="Memory per worker in GiB (0: the group's default)"),
            Select("accelerator", [NO_ACCELERATOR, *accels], label="GPU or MIG slice per worker"),
            handler=lambda options, user: overrides(facility, user, options, policies),
        )

    return for_user


def gateway_config(c: Any, facility: Facility, *, listen: str, db_url: str | None = None,
                   api_url: str | None = None, policy_db: str | None = None) -> None:
    """dask-gateway's settings. `listen`: host:port of its proxy (HTTP API and TLS to schedulers on one port);
    `db_url`: where clusters are kept across restarts of the gateway (in memory if None: then clusters stop
    with it); `api_url`: where schedulers reach the gateway (default: through the proxy); `policy_db`: the admin
    service's policies and budgets, which new clusters then follow."""
    d = facility.dask
    c.DaskGateway.backend_class = BACKEND
    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
    # Set, so that a token needs the access scope (dask-gateway checks it only when it knows its own name).
    c.JupyterHubAuthenticator.jupyterhub_service_name = SERVICE
    c.Proxy.address = listen
    c.Proxy.prefix = PREFIX
    b = c.FacilityBackend
    b.facility = facility
    b.cluster_options = cluster_options(facility, policy_store(policy_db) if policy_db else None)
    b.cluster_start_timeout = SCHEDULER_START_SECONDS
    b.worker_start_timeout = d.worker_start_timeout_minutes * 60
    if db_url:
        b.db_url = db_url
        b.stop_clusters_on_shutdown = False  # sessions keep their clusters when the gateway restarts
    if api_url:
        b.api_url = api_url


def _encryption_key(data: Path) -> str:
    """The key of the gateway's database (it keeps each cluster's token and TLS key): made once, kept private."""
    path = data / "dask-gateway.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()


def configure(c: Any, facility: Facility, *, data_dir: str | os.PathLike[str] | None = None,
              url: str | None = None) -> None:
    """Add the gateway service, its scope and the sessions' environment to the JupyterHub config `c`.

    `url`: where the hub's proxy and the sessions reach the gateway's proxy (default `$AIFACILITY_DASK_URL`, else
    `http://127.0.0.1:<free port>`). Schedulers keep this address for their lifetime, so a site that restarts
    the hub should fix it."""
    if not facility.dask.enabled:
        return
    _grant_access(c)
    add_spawner_environment(c, LABEXTENSION_ENV)
    if os.environ.get("AIFACILITY_PUBLIC_URL"):
        # The labextension checks a dashboard link from the session's server at the address the browser used,
        # the facility's public one: named here, the session may reach it (the node agent forwards what a
        # pod's environment names; on a cluster it is the ingress).
        add_spawner_environment(c, {"AIFACILITY_PUBLIC_URL": os.environ["AIFACILITY_PUBLIC_URL"]})
    if os.environ.get("AIFACILITY_EXTERNAL_DASK_GATEWAY", "") == "1":
        # The Helm chart runs dask-gateway as its own deployment (the dask-gateway subchart), declares the hub
        # service and gives the sessions its address (singleuser.extraEnv): the hub only grants the scope.
        return
    from aifacility.launcher.supervisor import free_port

    data = hub_data_dir(data_dir)
    facility_file = service_facility_file(data, "dask", facility)
    url = (url or os.environ.get("AIFACILITY_DASK_URL") or f"http://127.0.0.1:{free_port()}").rstrip("/")
    env = {"AIFACILITY_FACILITY": str(facility_file), "PYTHONUNBUFFERED": "1",
           "AIFACILITY_DASK_DB": f"sqlite:///{data / 'dask-gateway.sqlite'}",
           POLICY_DB_ENV: policy_db_url(data),
           "DASK_GATEWAY_ENCRYPT_KEYS": _encryption_key(data),
           **{k: os.environ[k] for k in CLUSTER_ENV if os.environ.get(k)}}
    c.JupyterHub.services = [*current(c.JupyterHub, "services", []), {
        "name": SERVICE, "url": url, "display": False, "environment": env,
        "command": [sys.executable, "-m", "aifacility.dask"],
    }]
    port = urlsplit(url).port
    add_spawner_environment(c, {
        "DASK_GATEWAY__ADDRESS": f"{url}{PREFIX}",
        # Schedulers are reached by TLS (SNI routing) through the same port.
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{urlsplit(url).hostname}:{port}",
        # Dashboards through the hub's own proxy, which routes the service's prefix to the gateway.
        "DASK_GATEWAY__PUBLIC_ADDRESS": f"{PREFIX}/",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    })


def _grant_access(c: Any) -> None:
    """Every user, and every session's token, may use the gateway; a session's token may also read its user's
    groups, which the options handler needs."""
    access = f"access:services!service={SERVICE}"
    roles = list(current(c.JupyterHub, "load_roles", []))
    for role_name, base, extra in (("user", ["self"], []),
                                   ("server", ["users:activity!user", "access:servers!server"],
                                    ["read:users:groups!user"])):
        role = next((r for r in roles if r.get("name") == role_name), None)
        if role is None:
            role = {"name": role_name, "scopes": list(base)}
            roles.append(role)
        scopes = list(role.get("scopes", base))
        role["scopes"] = [*scopes, *(s for s in (access, *extra) if s not in scopes)]
    c.JupyterHub.load_roles = roles
