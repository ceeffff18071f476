"""What the admin service's hub tests share (a uniquely named module: every test area has its own conftest.py)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from aifacility.embedded.cluster import EmbeddedCluster
from support.controlplane import Cluster
from support.hub_process import HubProcess


def launch_admin_hub(work: Path, cluster: Cluster, facility_file: Path, **env: str) -> HubProcess:
    """A hub (dummy login, `dana` its admin, a test service's token) with the admin service over `facility_file`,
    with the hub's identity on the session's cluster."""
    hub = HubProcess(work)
    hub.launch(textwrap.dedent(f"""
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{"dana"}}
        c.JupyterHub.services = [{{"name": "test", "api_token": "{hub.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "test", "scopes": ["admin:users", "admin:groups", "tokens"],
                                     "services": ["test"]}}]
        from aifacility.facility import load_facility
        from aifacility.admin import configure
        configure(c, load_facility("{facility_file}"), data_dir="{work}")
    """), env={**os.environ, "KUBECONFIG": str(EmbeddedCluster.hub_kubeconfig_path(cluster.state_dir)), **env})
    return hub
