"""Queued sessions, the spawner side: which queue a pod joins, what the progress page says while it waits."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from tornado import web

from aifacility.kueue.positions import PendingWorkload
from aifacility.spawner import queueing


def pending(ahead: int) -> PendingWorkload:
    return PendingWorkload(name="pod-jupyter-alice-1a2b3", namespace="aifacility", local_queue="physics",
                           priority=0, position_in_cluster_queue=ahead, position_in_local_queue=ahead,
                           owner_kind="Pod", owner_name="jupyter-alice", created=None)


WAITING = {"status": {"conditions": [{"type": "QuotaReserved", "status": "False", "reason": "Pending",
                                      "message": "couldn't assign flavors to pod set main: insufficient "
                                                 "unused quota for nvidia.com/gpu in flavor t4, 1 more needed"}]}}


def test_progress_line_gives_the_position_and_what_it_waits_for() -> None:
    line = queueing.describe("physics", "1 x NVIDIA Tesla T4", pending(2), WAITING)
    assert "Queued in the 'physics' queue for 1 x NVIDIA Tesla T4: position 3 (2 ahead of you)." in line
    assert "Waiting for: couldn't assign flavors" in line and "1 more needed" in line
    assert "no start timeout" in line
    assert "next in line" in queueing.describe("physics", "x", pending(0), None)
    assert "entering the queue" in queueing.describe("physics", "x", None, None)
    # A direct session that Kueue holds briefly keeps its start timeout, and is not told otherwise.
    assert "no start timeout" not in queueing.describe("physics", "x", pending(0), None, unbounded=False)


def test_gate_detection() -> None:
    gated = {"spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]}}
    assert queueing.is_gated(gated)
    assert not queueing.is_gated({"spec": {"schedulingGates": []}})
    assert not queueing.is_gated({"spec": {}})
    assert queueing.is_gated(None)  # not seen yet: still waiting


async def test_a_queued_spawn_joins_the_paying_groups_local_queue(make_spawner: Any, make_user: Any) -> None:
    spawner = make_spawner(make_user("alice", "physics", "ml"), profile="gpu-t4", image="ml", queue=True)
    spawner.start_timeout = 900
    await spawner.reserve(spawner.chosen_profile())
    assert spawner.reservation.queued and spawner.reservation.group == "physics"
    await spawner.load_user_options()
    spawner.volumes, spawner.volume_mounts = [], []
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "physics"
    # The accelerator request, selector and toleration stay: Kueue matches them against the T4 flavor.
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    await spawner.release()


async def test_direct_accelerator_sessions_go_through_kueue_too(make_spawner: Any, make_user: Any) -> None:
    # Kueue only counts what it admits: a direct GPU session must be in its books, or Kueue would admit a
    # queued session onto the same units.
    spawner = make_spawner(make_user("bob", "physics"), profile="gpu-t4")
    await spawner.reserve(spawner.chosen_profile())
    assert not spawner.reservation.queued
    await spawner.load_user_options()
    spawner.volumes, spawner.volume_mounts = [], []
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "physics"
    await spawner.release()


async def test_cpu_sessions_and_opted_out_sites_have_no_queue_label(make_spawner: Any, make_user: Any) -> None:
    cpu = make_spawner(make_user("bob", "physics"), profile="cpu-small")
    await cpu.reserve(cpu.chosen_profile())
    assert cpu._queue is None
    await cpu.release()
    gpu = make_spawner(make_user("bob", "physics"), profile="gpu-t4")
    gpu.kueue_accelerator_sessions = False
    await gpu.reserve(gpu.chosen_profile())
    await gpu.load_user_options()
    gpu.volumes, gpu.volume_mounts = [], []
    pod = ApiClient().sanitize_for_serialization(await gpu.get_pod_manifest())
    assert "kueue.x-k8s.io/queue-name" not in pod["metadata"]["labels"]
    await gpu.release()


async def test_queue_for_a_group_without_a_kueue_queue_is_refused(make_spawner: Any, make_user: Any) -> None:
    spawner = make_spawner(make_user("eve", "physics"), profile="cpu-small", queue=True)
    with pytest.raises(web.HTTPError) as e:
        spawner.chosen_profile()
    assert e.value.status_code == 400 and "cannot wait in a queue" in e.value.log_message % e.value.args


async def test_start_timeout_is_lifted_only_for_queued_spawns(make_spawner: Any, make_user: Any) -> None:
    spawner = make_spawner(make_user("alice", "ml"), profile="gpu-t4", queue=True)
    base = spawner.start_timeout
    started = spawner.start()
    # JupyterHub reads start_timeout right after start() returns, to bound the whole start.
    assert spawner.start_timeout == spawner.queued_start_timeout > 24 * 3600 > base
    with pytest.raises(Exception):  # noqa: B017 - no cluster here: the claims cannot be created
        await started
    assert not spawner.quotas.reservations()  # a failed start gives its reservation back
    spawner.user_options = {"profile": "gpu-t4"}
    started = spawner.start()
    assert spawner.start_timeout == base
    with pytest.raises(Exception):  # noqa: B017
        await started
