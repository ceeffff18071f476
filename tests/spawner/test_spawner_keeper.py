"""The spawn keeper: which reservations it treats as lost spawns, and when it asks the hub to resume them.

The hub is a test double here (the two REST calls); the whole path (a real hub restarted under a queued
session, the pod taken over) is `tests/e2e/test_queued_session.py`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from aifacility.facility.model import Limits
from aifacility.quotas.reservations import Claim, LimitsSource, QuotaStore
from aifacility.spawner.keeper import Keeper


class Unlimited:
    def user_limits(self, user: str) -> Limits:
        return Limits()

    def group_limits(self, group: str) -> None:
        return None


class FakeHub:
    def __init__(self, active: dict[str, set[str]], refuse: dict[tuple[str, str], tuple[int, str]] | None = None):
        self.active = active
        self.refuse = refuse or {}
        self.started: list[tuple[str, str]] = []

    async def servers(self, user: str) -> dict[str, dict[str, object]] | None:
        names = self.active.get(user)
        return None if names is None else {name: {"pending": None, "ready": True} for name in names}

    async def start_server(self, user: str, server: str) -> tuple[int, str]:
        self.started.append((user, server))
        return self.refuse.get((user, server), (202, ""))


def reserve(store: QuotaStore, user: str, server: str = "", queued: bool = True) -> None:
    limits: LimitsSource = Unlimited()
    asyncio.run(store.reserve(Claim(user, server, ("ml",), "mig-3g.40gb", 1, queued=queued), limits))


def test_a_lost_spawn_is_resumed_on_the_second_pass_and_a_live_one_never(tmp_path: Path) -> None:
    store = QuotaStore(tmp_path / "q.sqlite")
    reserve(store, "alice")  # lost: the hub lists no server for her
    reserve(store, "carol", "gpu")  # a named server, lost too
    reserve(store, "dave")  # running
    hub = FakeHub({"alice": set(), "carol": {""}, "dave": {""}})
    keeper = Keeper(store, hub)
    assert asyncio.run(keeper.sweep()) == [] and hub.started == []  # first sight: only suspected
    resumed = asyncio.run(keeper.sweep())
    assert sorted(hub.started) == [("alice", ""), ("carol", "gpu")]
    assert [status for _, status, _ in resumed] == [202, 202]


def test_a_stop_releasing_between_two_passes_is_not_mistaken_for_a_lost_spawn(tmp_path: Path) -> None:
    store = QuotaStore(tmp_path / "q.sqlite")
    reserve(store, "alice")
    hub = FakeHub({"alice": set()})
    keeper = Keeper(store, hub)
    asyncio.run(keeper.sweep())
    asyncio.run(store.release("alice", ""))  # the stop's post-stop hook ran
    assert asyncio.run(keeper.sweep()) == []
    reserve(store, "alice")  # a new spawn of the same server, whose hub record is not visible yet
    assert asyncio.run(keeper.sweep()) == []  # a different reservation: suspected afresh, not resumed
    assert hub.started == []


def test_unknown_users_are_left_alone_and_refusals_are_reported(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = QuotaStore(tmp_path / "q.sqlite")
    reserve(store, "ghost")
    reserve(store, "bob")
    hub = FakeHub({"bob": set()}, refuse={("bob", ""): (400, "'mig-3g-40gb' is only open to the group(s) ml")})
    keeper = Keeper(store, hub)
    asyncio.run(keeper.sweep())
    with caplog.at_level("WARNING", logger="aifacility.keeper"):
        resumed = asyncio.run(keeper.sweep())
    assert hub.started == [("bob", "")]
    assert resumed[0][1:] == (400, "'mig-3g-40gb' is only open to the group(s) ml")
    assert "ghost (default server) holds a reservation but the hub has no such user" in caplog.text
    assert "The hub refused to resume bob (default server) (400)" in caplog.text


def test_the_command_line_rejects_a_bad_interval(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "aifacility.spawner.keeper", "--quota-db",
                          str(tmp_path / "q.sqlite"), "--interval", "0"], capture_output=True, text=True)
    assert run.returncode == 2
    assert "--interval must be a positive number of seconds, not 0.0" in run.stderr
    assert "Traceback" not in run.stderr
