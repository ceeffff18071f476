"""The hub-side spawner: facility profiles (GPU / MIG / FPGA), shared storage, live availability, quotas.

`configure(c, facility)` sets every traitlet the hub needs for it; `hub/jupyterhub_config.py` calls it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aifacility.facility import Facility
from aifacility.hubconfig import add_spawner_args, add_spawner_environment
from aifacility.quotas.store import default_url as policy_db_url
from aifacility.spawner.api import install as install_option_checks
from aifacility.spawner.spawner import FacilitySpawner

__all__ = ["FacilitySpawner", "configure"]


def configure(c: Any, facility: Facility, *, facility_path: str | None = None,
              data_dir: str | None = None, keeper_interval: float = 10.0) -> None:
    """Point JupyterHub at FacilitySpawner and set its traits from the facility description.

    `facility_path` is the facility file the spawner re-reads (default: `$AIFACILITY_FACILITY` or the demo);
    `data_dir` is the hub's data directory, where the quota reservations live (default: `$AIFACILITY_HUB_DATA`,
    else the hub's working directory). `keeper_interval`: seconds between the passes of the spawn keeper, the
    service that resumes the spawns a hub restart lost (see keeper.py).
    """
    fs = facility.storage
    c.JupyterHub.spawner_class = FacilitySpawner
    # The spawn API checks a body's options before JupyterHub stores anything of the spawn (see api.py).
    install_option_checks()
    s = c.FacilitySpawner
    if facility_path:
        s.facility_path = str(facility_path)
    s.namespace = facility.namespace
    # Each pod has its own IP (the node agent, like a pod network): the server binds to it, and KubeSpawner
    # reaches it on the pod IP at port 8888. `$(POD_IP)` is expanded by the kubelet from the env below.
    s.cmd = ["jupyterhub-singleuser"]
    add_spawner_args(c, ["--ServerApp.ip=$(POD_IP)"])
    # The notebook user of the docker-stacks images (jovyan, 1000:100), as Zero to JupyterHub runs it: never
    # root, no capabilities, no privilege escalation; volumes are the group's (fsGroup).
    s.uid = 1000
    s.gid = 100
    s.fs_gid = 100
    s.ip = "0.0.0.0"
    s.port = 8888
    add_spawner_environment(c, {
        "POD_IP": {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        "HOME": fs.home_mount_path,
    })
    s.working_dir = fs.home_mount_path
    # GPU images are large (CUDA, PyTorch) and a cold node pulls them for minutes; queued sessions get no
    # timeout at all while they wait (see FacilitySpawner.queue_max_wait).
    s.start_timeout = 900
    s.http_timeout = 120
    s.events_enabled = True
    # The private home: claim home-<user> on the ReadWriteMany class, created by KubeSpawner when missing and
    # kept when the user is deleted (data is the user's, removal is an admin decision).
    s.storage_pvc_ensure = True
    s.pvc_name_template = "home-{username}"
    s.storage_class = fs.storage_class
    s.storage_capacity = fs.home_size
    s.storage_access_modes = ["ReadWriteMany"]
    s.delete_pvc = False
    # A refused spawn (forbidden profile, quota) is the user's answer, not a hub fault: it must never count
    # towards the consecutive-failure limit that makes the hub exit.
    s.consecutive_failure_limit = 0
    s.quota_db = os.path.join(data_dir or os.environ.get("AIFACILITY_HUB_DATA") or os.getcwd(),
                              "aifacility-quotas.sqlite")
    s.policy_db = policy_db_url(data_dir or os.environ.get("AIFACILITY_HUB_DATA") or os.getcwd())

    # The spawn keeper: resumes queued (and other pending) spawns after a hub restart, with the least scopes.
    # (Imported here: its process runs `-m aifacility.spawner.keeper`, which must not find it imported already.)
    from aifacility.spawner import keeper

    c.JupyterHub.services = [*(c.JupyterHub.services if "services" in c.JupyterHub else []), {
        "name": keeper.SERVICE,
        "command": [sys.executable, "-m", "aifacility.spawner.keeper", f"--quota-db={s.quota_db}",
                    f"--interval={keeper_interval:g}"],
        "environment": {"PYTHONUNBUFFERED": "1"},
    }]
    c.JupyterHub.load_roles = [*(c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []), {
        "name": keeper.SERVICE, "description": "Resume the spawns a hub restart lost",
        "scopes": keeper.SCOPES, "services": [keeper.SERVICE]}]
