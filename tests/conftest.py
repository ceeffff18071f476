"""Fixtures shared across test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aifacility_interlink.localslurm import LocalSlurm


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """One real SLURM (slurmctld + slurmd on localhost, munge) for the whole session, stopped at its end."""
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), min_job_age=600)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
