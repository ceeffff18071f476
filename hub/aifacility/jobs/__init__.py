"""Batch and notebook jobs from the sessions: a hub service that owns the creation of Kueue-queued batch/v1 Jobs
(users never hold cluster credentials), and its client (Python API and `aifacility jobs`).

    request.py   what a submission may contain (types, sizes)
    policy.py    the facility's rules: group, image, accelerator, offload target, time limit
    manifest.py  the Job and its token Secret
    status.py    a job as its owner sees it (phase, queue position, flavor, site, exit code)
    cluster.py   the Kubernetes calls
    service/     the REST API (JupyterHub service)
    client.py    the Python API; cli.py the command line
"""

from __future__ import annotations

from typing import Any

from aifacility.facility.model import Facility


def configure(c: Any, facility: Facility, **kw: Any) -> None:
    from aifacility.jobs.config import configure as _configure

    _configure(c, facility, **kw)


__all__ = ["configure"]
