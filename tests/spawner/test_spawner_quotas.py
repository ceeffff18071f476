"""Spawn-time quotas against the real sqlite store: limits, messages, the group rule, restarts, and the race."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aifacility.facility import Facility
from aifacility.facility.model import Limits, Quotas
from aifacility.quotas.reservations import Claim, FacilityLimits, QuotaExceeded, QuotaStore, headroom


def limits(facility: Facility, **quotas: object) -> FacilityLimits:
    return FacilityLimits(facility.model_copy(update={"quotas": Quotas(**quotas)}))  # type: ignore[arg-type]


def t4(user: str, server: str = "", groups: tuple[str, ...] = ("ml",), **kw: object) -> Claim:
    return Claim(user=user, server=server, groups=groups, accelerator="t4", units=1, **kw)  # type: ignore[arg-type]


async def test_twenty_concurrent_spawns_for_the_last_two_units_exactly_two_win(
        facility: Facility, tmp_path: Path) -> None:
    src = limits(facility, default_user=Limits(servers=1), groups={"ml": Limits(accelerators={"t4": 4})})
    store = QuotaStore(tmp_path / "q.sqlite")
    await store.reserve(t4("early1"), src)
    await store.reserve(t4("early2"), src)  # 2 of the group's 4 T4s are taken: 2 are left

    results = await asyncio.gather(*(store.reserve(t4(f"user{i}"), src) for i in range(20)),
                                   return_exceptions=True)

    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 2
    assert all(isinstance(e, QuotaExceeded) for e in lost) and len(lost) == 18
    assert "group 'ml' may use 4 t4 unit(s) at once and its members use 4" in str(lost[0])
    # What is on disk agrees: exactly four T4s held by the group.
    assert sum(r.units for r in QuotaStore(tmp_path / "q.sqlite").reservations() if r.group == "ml") == 4


async def test_user_server_limit_says_which_limit_and_how_to_free_it(facility: Facility, tmp_path: Path) -> None:
    src = limits(facility, default_user=Limits(servers=1))
    store = QuotaStore(tmp_path / "q.sqlite")
    await store.reserve(Claim("alice", "", ("ml",)), src)
    with pytest.raises(QuotaExceeded) as e:
        await store.reserve(Claim("alice", "second", ("ml",)), src)
    msg = str(e.value)
    assert "alice may run 1 server(s) at once and already has 1 (alice (default server))" in msg
    assert "/hub/home" in msg and "DELETE /hub/api/users/alice/servers/<name>" in msg
    # Re-spawning the same server is not a second server.
    await store.reserve(Claim("alice", "", ("ml",)), src)


async def test_user_accelerator_limit_and_the_queue_hint(facility: Facility, tmp_path: Path) -> None:
    src = limits(facility, default_user=Limits(servers=3, accelerators={"t4": 1}))
    store = QuotaStore(tmp_path / "q.sqlite")
    await store.reserve(t4("bob", "a"), src)
    with pytest.raises(QuotaExceeded, match=r"bob may use 1 T4 unit\(s\) at once and already uses 1 \(bob/a: 1\)"
                       r".*tick 'queue'"):
        await store.reserve(t4("bob", "b", queueable=True), src, label=lambda a: a.upper())
    # A queued session waits in Kueue: the hub does not count it against accelerator limits.
    queued = await store.reserve(t4("bob", "b", queued=True, queueable=True), src)
    assert queued.queued
    # Once admitted it counts: a third session is refused.
    await store.admitted("bob", "b")
    with pytest.raises(QuotaExceeded, match="already uses 2"):
        await store.reserve(t4("bob", "c"), src)


async def test_first_candidate_group_with_room_pays(facility: Facility, tmp_path: Path) -> None:
    src = limits(facility, default_user=Limits(servers=5),
                 groups={"physics": Limits(accelerators={"t4": 1}), "ml": Limits(accelerators={"t4": 1})})
    store = QuotaStore(tmp_path / "q.sqlite")
    first = await store.reserve(t4("alice", "a", groups=("physics", "ml")), src)
    second = await store.reserve(t4("alice", "b", groups=("physics", "ml")), src)
    assert (first.group, second.group) == ("physics", "ml")
    with pytest.raises(QuotaExceeded) as e:
        await store.reserve(t4("alice", "c", groups=("physics", "ml")), src)
    assert "group 'physics' may use 1" in str(e.value) and "group 'ml' may use 1" in str(e.value)
    # A group without a quota entry has no group-level limit.
    assert (await store.reserve(t4("alice", "d", groups=("admins",)), src)).group == "admins"


async def test_reservations_survive_a_restart_and_stop_releases(facility: Facility, tmp_path: Path) -> None:
    src = limits(facility, default_user=Limits(servers=1), groups={"ml": Limits(accelerators={"t4": 1})})
    await QuotaStore(tmp_path / "q.sqlite").reserve(t4("carol"), src)
    restarted = QuotaStore(tmp_path / "q.sqlite")  # a new hub process opening the same file
    with pytest.raises(QuotaExceeded, match=r"carol \(default server\): 1"):
        await restarted.reserve(t4("dave"), src)
    await restarted.release("carol", "")
    await restarted.release("carol", "")  # twice is harmless
    assert (await restarted.reserve(t4("dave"), src)).group == "ml"


async def test_headroom_is_what_reserve_would_still_accept(facility: Facility, tmp_path: Path) -> None:
    src = limits(facility, default_user=Limits(servers=5, accelerators={"t4": 2}),
                 groups={"physics": Limits(accelerators={"t4": 1}), "ml": Limits(accelerators={"t4": 3})})
    store = QuotaStore(tmp_path / "q.sqlite")
    assert headroom("alice", ["physics", "ml"], "t4", src, store.reservations()) == 2  # her own limit binds
    await store.reserve(t4("bob", groups=("physics",)), src)
    assert headroom("bob", ["physics"], "t4", src, store.reservations()) == 0  # physics' one T4 is his
    assert headroom("alice", ["physics", "ml"], "t4", src, store.reservations()) == 2  # ml still pays
    await store.reserve(t4("carol", "q", queued=True), src)  # queued: Kueue counts it, not the hub
    assert headroom("dave", ["ml"], "t4", src, store.reservations()) == 2
    assert headroom("dave", ["admins"], "t4", src, store.reservations()) == 2  # no group limit: his own
    assert headroom("dave", ["admins"], "rtx5000", src, store.reservations()) is None  # no limit at all
    # What the form promises, the quota check keeps: alice gets exactly two more.
    for server in ("a", "b"):
        await store.reserve(t4("alice", server, groups=("physics", "ml")), src)
    assert headroom("alice", ["physics", "ml"], "t4", src, store.reservations()) == 0
    with pytest.raises(QuotaExceeded):
        await store.reserve(t4("alice", "c", groups=("physics", "ml")), src)


def test_facility_limits_read_the_facility_file(facility: Facility) -> None:
    src = FacilityLimits(facility)
    assert src.user_limits("nobody").servers == 1
    ml = src.group_limits("ml")
    assert ml is not None and ml.accelerators["mig-1g-10gb"] == 4
    assert src.group_limits("no-such-group") is None
