"""The real control plane for the tests of this folder: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and Kueue, started once for the session on the demo facility (no node agent: nothing runs pods)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from controlplane_support import Cluster, start_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("controlplane")) as c:
        yield c
