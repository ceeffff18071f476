"""The admin service's tests: its pure parts, and the service in a real JupyterHub writing the ClusterQueues of
the session's embedded cluster (the real control plane and Kueue, shared with tests/controlplane)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.controlplane import Cluster, shared_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with shared_cluster(tmp_path_factory) as c:
        yield c

