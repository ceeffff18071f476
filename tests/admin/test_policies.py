"""Policies over the facility file: parsing with clear messages, the facility they make, the store and its audit
trail, and the spawner's limits following a change without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aifacility.facility import load_facility
from aifacility.facility.model import Facility
from aifacility.kueue.render import cluster_queue
from aifacility.quotas.policy import (
    GroupPolicy,
    Policies,
    PolicyError,
    PolicyLimits,
    UserPolicy,
    check,
    effective,
    parse_policy,
)
from aifacility.quotas.reservations import Claim, QuotaExceeded, QuotaStore
from aifacility.quotas.store import PolicyStore
from support.queues import nominal_quota


@pytest.fixture
def facility() -> Facility:
    return load_facility()


def _nominal(facility: Facility, group: str, flavor: str) -> str:
    return nominal_quota(cluster_queue(facility, group), flavor)


def test_a_group_policy_changes_spawn_limits_and_the_queue_and_keeps_the_rest(facility: Facility) -> None:
    policy = parse_policy("group", {"accelerators": {"t4": 1}, "queue_cpu": "8", "borrowing": False})
    check(facility, "group", "physics", policy)
    now = effective(facility, Policies().replace("group", "physics", policy))
    assert now.quotas.groups["physics"].accelerators == {"t4": 1, "alveo-v70": 1}  # the file's FPGA kept
    assert now.quotas.groups["physics"].servers == 20
    # physics' queue takes its accelerators from its spawn limits (the file sets none): both follow.
    assert _nominal(now, "physics", "t4") == "1" and _nominal(facility, "physics", "t4") == "4"
    assert now.queues.groups["physics"].cpu == "8" and now.queues.groups["physics"].borrowing is False
    assert now.queues.groups["ml"] == facility.queues.groups["ml"]
    # A queue-only quota leaves the spawn limit alone.
    q = parse_policy("group", {"queue_accelerators": {"mig-1g-10gb": 1}})
    now = effective(facility, Policies().replace("group", "ml", q))
    assert _nominal(now, "ml", "mig-1g-10gb") == "1" and now.quotas.groups["ml"].accelerators["mig-1g-10gb"] == 4


@pytest.mark.parametrize("scope, body, needle", [
    ("group", {"servers": -1}, "servers: Input should be greater than or equal to 0"),
    ("group", {"accelerators": {"t4": "2"}}, "accelerators.t4: Input should be a valid integer"),
    ("group", {"accelerators": {"t4": 10**9}}, "less than or equal to 100000"),
    ("group", {"gpus": 1}, "gpus: is not a policy field (the fields are: servers, accelerators, budget, queue_"),
    ("user", {"queue_cpu": "2"}, "queue_cpu: is not a policy field (the fields are: servers, accelerators, budget)"),
    ("group", {"queue_memory": "lots"}, "queue_memory:"),
    ("group", {"queue_cpu": "-3"}, "cannot be negative"),
    ("group", {"borrowing": "maybe"}, "borrowing: Input should be a valid boolean"),
    ("group", [1, 2], "is a JSON object"),
])
def test_bad_policies_are_refused_with_a_message(scope: str, body: object, needle: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(scope, body)  # type: ignore[arg-type]
    assert needle in str(e.value), str(e.value)


def test_policies_that_do_not_fit_the_facility_are_refused(facility: Facility) -> None:
    with pytest.raises(PolicyError, match=r"unknown accelerator 'h100'.*t4"):
        check(facility, "group", "physics", GroupPolicy(accelerators={"h100": 1}))
    with pytest.raises(PolicyError, match=r"Group 'admins' has no Kueue queue.*ml, physics"):
        check(facility, "group", "admins", GroupPolicy(queue_cpu="4"))
    check(facility, "group", "admins", GroupPolicy(servers=2))  # spawn limits need no queue
    with pytest.raises(PolicyError, match="queue_accelerators: unknown accelerator 'tpu'"):
        check(facility, "group", "ml", GroupPolicy(queue_accelerators={"tpu": 1}))


def test_the_store_keeps_each_change_in_the_audit_trail_and_survives_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'policies.sqlite'}"
    store = PolicyStore(url)
    first = store.put("group", "physics", GroupPolicy(accelerators={"t4": 2}), "dana")
    assert first is not None and first.before is None and first.after == {"accelerators": {"t4": 2}}
    assert store.put("group", "physics", GroupPolicy(accelerators={"t4": 2}), "dana") is None  # no change, no row
    store.put("user", "bob", UserPolicy(servers=3), "dana")
    store.put("group", "physics", None, "erin")
    store.close()
    again = PolicyStore(url)
    assert again.snapshot() == Policies({}, {"bob": UserPolicy(servers=3)})
    trail = again.audit()
    assert [(c.actor, c.scope, c.name, c.before, c.after) for c in trail] == [
        ("erin", "group", "physics", {"accelerators": {"t4": 2}}, None),
        ("dana", "user", "bob", None, {"servers": 3}),
        ("dana", "group", "physics", None, {"accelerators": {"t4": 2}}),
    ]
    assert [c.name for c in again.audit(scope="user")] == ["bob"]


def test_a_spawn_obeys_a_lowered_group_limit_at_once(facility: Facility, tmp_path: Path) -> None:
    policies = PolicyStore(f"sqlite:///{tmp_path / 'policies.sqlite'}")
    reservations = QuotaStore(tmp_path / "quotas.sqlite")
    claim = Claim("bob", "", ("physics",), "t4", 1)

    async def spawn(user: str, server: str) -> None:
        c = Claim(user, server, claim.groups, claim.accelerator, claim.units)
        await reservations.reserve(c, PolicyLimits(facility, policies.snapshot()))

    asyncio.run(spawn("bob", ""))
    policies.put("group", "physics", GroupPolicy(accelerators={"t4": 1}), "dana")
    with pytest.raises(QuotaExceeded, match="group 'physics' may use 1 t4 unit"):
        asyncio.run(spawn("carol", ""))
    policies.put("user", "carol", UserPolicy(accelerators={"t4": 0}), "dana")
    policies.put("group", "physics", None, "dana")
    with pytest.raises(QuotaExceeded, match="carol may use 0 t4 unit"):
        asyncio.run(spawn("carol", ""))
    asyncio.run(spawn("erin", ""))  # the file's 4 again
