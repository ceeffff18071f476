"""One running embedded facility for the end-to-end tests of this folder, and a browser."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from support.browser import chromium
from support.facility import RunningFacility, start_facility


@pytest.fixture(scope="session")
def facility() -> Iterator[RunningFacility]:
    # Not under pytest's own temporary directory, which is closed to other users (0700): SLURM jobs of offloaded
    # pods run as the pod's user (jovyan) and must reach their job directory in the facility's state.
    base = Path(tempfile.mkdtemp(prefix="aifacility-e2e-"))
    base.chmod(0o711)
    # Budgets, events and the queues' reconciliation checked every 2 s instead of every half minute or minute, so
    # that the budget and events tests do not wait for them.
    fac = start_facility(base, env={"AIFACILITY_BUDGET_CHECK_SECONDS": "2", "AIFACILITY_EVENT_CHECK_SECONDS": "2",
                                    "AIFACILITY_ADMIN_QUEUE_SYNC_SECONDS": "2"})
    yield fac
    code = fac.stop()
    assert code == 0, "".join(fac.output[-40:])
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture
def state_dir(facility: RunningFacility) -> Path:
    return facility.state_dir
