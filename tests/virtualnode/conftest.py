"""Fixtures: a real SLURM (LocalSlurm), the interLink plugin as a real server process (`--runtime bwrap`, with a
token), and the embedded cluster (the real control plane and Kueue) whose node agent runs the vk-hpc-leonardo
virtual node against that plugin. Started once for the session; kubectl runs as an async subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from vnode_helpers import Kubectl, OffloadCluster, Plugin, offload_cluster

from aifacility.facility import load_facility
from aifacility_interlink.localslurm import LocalSlurm


@pytest.fixture(scope="session")
def plugin_process(slurm: LocalSlurm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    p = Plugin(tmp_path_factory.mktemp("plugin"), slurm.env()).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def plugin(plugin_process: Plugin) -> Plugin:
    """The plugin, running (a test before may have stopped it)."""
    if not plugin_process.running:
        plugin_process.start()
    return plugin_process


@pytest.fixture(scope="session")
def offload(plugin_process: Plugin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OffloadCluster]:
    with offload_cluster(load_facility(), tmp_path_factory.mktemp("offload"), plugin_process) as c:
        yield c


@pytest.fixture
def cluster(offload: OffloadCluster, plugin: Plugin) -> OffloadCluster:
    """The cluster, its node agent running and its plugin answering."""
    if not offload.agent.alive():
        offload.agent.start()
        offload.agent.wait_ready(60)
    return offload


@pytest.fixture
def kubectl(cluster: OffloadCluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig)
