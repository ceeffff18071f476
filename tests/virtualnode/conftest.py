"""Fixtures: a real SLURM (LocalSlurm), the interLink plugin as a real server process (`--runtime bwrap`), and
a DevCluster whose vk-hpc-leonardo virtual node forwards to it. kubectl runs as an async subprocess, so the
cluster keeps serving on the test's own event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from vnode_helpers import VNODE, Kubectl, Plugin

from aifacility.devcluster import DevCluster
from aifacility.facility import load_facility
from aifacility_interlink.localslurm import LocalSlurm


@pytest.fixture
def plugin(slurm: LocalSlurm, tmp_path: Path) -> Iterator[Plugin]:
    p = Plugin(tmp_path / "plugin", slurm.env()).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
async def cluster(plugin: Plugin, tmp_path: Path) -> AsyncIterator[DevCluster]:
    dev = DevCluster(load_facility(), tmp_path / "state", interlink_urls={VNODE: plugin.url}, backoff_base=0.2)
    # Tests ping and poll often; the defaults (30 s, 5 s) are interLink's.
    dev.virtual_nodes.ping_interval = 0.5
    dev.virtual_nodes.status_interval = 0.5
    dev.virtual_nodes.retry = (0.2, 1.0)
    async with dev:
        yield dev


@pytest.fixture
def kubectl(cluster: DevCluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig_path)
