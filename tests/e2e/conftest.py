"""One running embedded facility for the end-to-end tests of this folder, and a browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from support.browser import chromium
from support.facility import RunningFacility, start_facility


@pytest.fixture(scope="session")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFacility]:
    fac = start_facility(tmp_path_factory.mktemp("facility"))
    yield fac
    code = fac.stop()
    assert code == 0, "".join(fac.output[-40:])


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture
def state_dir(facility: RunningFacility) -> Path:
    return facility.state_dir
