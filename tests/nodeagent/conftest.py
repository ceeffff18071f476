"""The node agent's tests: its pure parts, and its behaviour as the kubelet of the real control plane (one
embedded cluster for the session, shared with tests/controlplane)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aifacility.facility import load_facility
from aifacility.facility.model import Facility
from support.controlplane import Cluster, shared_cluster


@pytest.fixture
def facility() -> Facility:
    return load_facility()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's embedded cluster, node agent included (the same one tests/controlplane uses)."""
    with shared_cluster(tmp_path_factory) as c:
        yield c
