"""Dask clusters from the sessions: dask-gateway as a hub service, configured from the facility file.

    options.py   the facility's rules: group, worker size, accelerator, clusters per user (pure)
    pods.py      the scheduler and worker pods and the cluster's credentials Secret
    backend.py   a dask-gateway backend that creates those pods (DBBackendBase: six operations)
    config.py    dask-gateway's configuration, and the hub service that runs it (`configure`)
    __main__.py  the gateway process the hub starts
"""

from __future__ import annotations

from typing import Any

from aifacility.facility.model import Facility


def configure(c: Any, facility: Facility, **kw: Any) -> None:
    from aifacility.dask.config import configure as _configure

    _configure(c, facility, **kw)


__all__ = ["configure"]
