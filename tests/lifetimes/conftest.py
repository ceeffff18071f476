"""Fixture: the lifetimes test hub (see lifetimes_harness.py), one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lifetimes_harness import LifetimesHub, start_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LifetimesHub]:
    h = start_hub(tmp_path_factory.mktemp("lifetimes-hub"))
    try:
        yield h
    finally:
        h.stop()
