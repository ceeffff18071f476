"""The real control plane for the tests of this folder: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, Kueue and the node agent, started once for the session on the demo facility (shared with
tests/nodeagent)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.controlplane import Cluster, shared_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with shared_cluster(tmp_path_factory) as c:
        yield c
