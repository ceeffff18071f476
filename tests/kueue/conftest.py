"""Fixtures for the Kueue tests: an in-memory store with the Kueue webhook and a running admission loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kueue_helpers import NS

from aifacility.devcluster.kinds import NAMESPACE
from aifacility.devcluster.kueue import KueueController, kueue_hook
from aifacility.devcluster.store import Store


@pytest.fixture
def store() -> Store:
    s = Store()
    s.add_hook(kueue_hook)
    s.create(NAMESPACE, {"metadata": {"name": NS}})
    return s


@pytest.fixture
async def kueue(store: Store) -> AsyncIterator[KueueController]:
    controller = KueueController(store)
    await controller.start()
    yield controller
    await controller.stop()
