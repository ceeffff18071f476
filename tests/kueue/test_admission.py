"""The development cluster's Kueue loop on a real (in-memory) store: gating, admission order, quota, Jobs."""

from __future__ import annotations

from typing import Any

from kueue_helpers import NS, job, pod, setup_queues

from aifacility.devcluster.kinds import CLUSTERQUEUE, JOB, LOCALQUEUE, POD, WORKLOAD, WORKLOADPRIORITYCLASS
from aifacility.devcluster.kueue import KueueController
from aifacility.devcluster.kueue.visibility import pending_in_cluster_queue
from aifacility.devcluster.kueue.workloads import condition
from aifacility.devcluster.store import Store

GATE = {"name": "kueue.x-k8s.io/admission"}


def workload_of(store: Store, owner: str) -> dict[str, Any]:
    matches = [w for w in store.list(WORKLOAD, NS)[0]
               if w["metadata"]["ownerReferences"][0]["name"] == owner]
    assert len(matches) == 1, f"{len(matches)} workloads for {owner}"
    return matches[0]


def usage(store: Store, cq: str) -> dict[str, dict[str, str]]:
    status = store.get(CLUSTERQUEUE, None, cq)["status"]
    return {f["name"]: {r["name"]: (r["total"], r["borrowed"]) for r in f["resources"]}
            for f in status["flavorsUsage"]}


async def test_two_gated_pods_quota_for_one(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "1"})
    first = store.create(POD, pod("first"))
    store.create(POD, pod("second"))
    # The webhook gates and marks queue-labelled pods at creation.
    assert first["spec"]["schedulingGates"] == [GATE]
    assert first["metadata"]["labels"]["kueue.x-k8s.io/managed"] == "true"
    await kueue.settle()

    admitted = store.get(POD, NS, "first")
    assert "schedulingGates" not in admitted["spec"]
    assert admitted["spec"]["nodeSelector"] == {"pool": "pool-a"}
    wl = workload_of(store, "first")
    assert wl["metadata"]["ownerReferences"][0]["uid"] == first["metadata"]["uid"]
    assert condition(wl, "QuotaReserved")["status"] == "True"
    assert condition(wl, "Admitted")["status"] == "True"
    assert wl["status"]["admission"] == {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "main", "count": 1, "flavors": {"cpu": "pool-a"}, "resourceUsage": {"cpu": "1"}}]}

    waiting = store.get(POD, NS, "second")
    assert waiting["spec"]["schedulingGates"] == [GATE]
    assert "nodeSelector" not in waiting["spec"]
    pending = condition(workload_of(store, "second"), "QuotaReserved")
    assert pending["status"] == "False" and pending["reason"] == "Pending"
    assert "insufficient unused quota for cpu in flavor pool-a" in pending["message"]
    [item] = pending_in_cluster_queue(store, "cq")
    assert item["metadata"]["ownerReferences"][0]["name"] == "second"
    assert (item["positionInClusterQueue"], item["positionInLocalQueue"]) == (0, 0)

    cq_status = store.get(CLUSTERQUEUE, None, "cq")["status"]
    assert (cq_status["pendingWorkloads"], cq_status["reservingWorkloads"], cq_status["admittedWorkloads"]) == (1, 1, 1)
    assert usage(store, "cq") == {"pool-a": {"cpu": ("1", "0")}}
    assert condition({"status": cq_status}, "Active")["status"] == "True"
    lq_status = store.get(LOCALQUEUE, NS, "lq")["status"]
    assert (lq_status["pendingWorkloads"], lq_status["admittedWorkloads"]) == (1, 1)
    assert lq_status["flavorsUsage"] == [{"name": "pool-a", "resources": [{"name": "cpu", "total": "1"}]}]

    store.delete(POD, NS, "first")  # not bound to a node here: removed at once, its Workload goes too
    await kueue.settle()
    now = store.get(POD, NS, "second")
    assert "schedulingGates" not in now["spec"] and now["spec"]["nodeSelector"] == {"pool": "pool-a"}
    assert [w["metadata"]["ownerReferences"][0]["name"] for w in store.list(WORKLOAD, NS)[0]] == ["second"]
    assert pending_in_cluster_queue(store, "cq") == []


async def test_priority_then_creation_order(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "1"})
    store.create(WORKLOADPRIORITYCLASS, {"metadata": {"name": "urgent"}, "value": 1000})
    store.create(POD, pod("blocker"))
    await kueue.settle()
    for name in ("old", "young"):
        store.create(POD, pod(name))
    urgent = pod("urgent")
    urgent["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] = "urgent"
    store.create(POD, urgent)
    await kueue.settle()
    order = [(i["metadata"]["ownerReferences"][0]["name"], i["priority"], i["positionInClusterQueue"])
             for i in pending_in_cluster_queue(store, "cq")]
    assert order == [("urgent", 1000, 0), ("old", 0, 1), ("young", 0, 2)]
    store.delete(POD, NS, "blocker")
    await kueue.settle()
    assert "schedulingGates" not in store.get(POD, NS, "urgent")["spec"]
    assert store.get(POD, NS, "old")["spec"]["schedulingGates"] == [GATE]


async def test_best_effort_fifo_lets_a_smaller_workload_past(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "3"})
    store.create(POD, pod("big", cpu="4"))
    store.create(POD, pod("small", cpu="2"))
    await kueue.settle()
    assert store.get(POD, NS, "big")["spec"]["schedulingGates"] == [GATE]
    assert "schedulingGates" not in store.get(POD, NS, "small")["spec"]


async def test_strict_fifo_blocks_behind_the_head(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "3"}, queueingStrategy="StrictFIFO")
    store.create(POD, pod("big", cpu="4"))
    store.create(POD, pod("small", cpu="2"))
    await kueue.settle()
    assert store.get(POD, NS, "small")["spec"]["schedulingGates"] == [GATE]
    assert condition(workload_of(store, "small"), "QuotaReserved")["message"] == (
        "waiting behind an older workload in ClusterQueue cq (StrictFIFO)")


async def test_job_suspended_admitted_unsuspended_and_released(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "2"})
    store.create(JOB, job("train", cpu="1", parallelism=2))
    created = store.create(JOB, job("next", cpu="1"))
    assert created["spec"]["suspend"] is True  # the webhook suspends queue-labelled Jobs at creation
    await kueue.settle()
    train = store.get(JOB, NS, "train")
    assert train["spec"]["suspend"] is False
    assert train["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "pool-a"}
    assert workload_of(store, "train")["status"]["admission"]["podSetAssignments"][0]["resourceUsage"] == {"cpu": "2"}
    assert store.get(JOB, NS, "next")["spec"]["suspend"] is True
    assert usage(store, "cq") == {"pool-a": {"cpu": ("2", "0")}}

    def complete(j: dict[str, Any]) -> None:
        j["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 2}

    store.modify(JOB, NS, "train", complete, subresource="status")
    await kueue.settle()
    finished = condition(workload_of(store, "train"), "Finished")
    assert finished["status"] == "True" and finished["reason"] == "Succeeded"
    assert store.get(JOB, NS, "next")["spec"]["suspend"] is False
    assert usage(store, "cq") == {"pool-a": {"cpu": ("1", "0")}}


async def test_borrowing_within_a_cohort(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "1"}, cq="cq-a", lq="lq-a", cohort="lab")
    setup_queues(store, {"pool-a": "2"}, cq="cq-b", lq="lq-b", cohort="lab")
    for i in range(4):
        store.create(POD, pod(f"a{i}", queue="lq-a"))
    await kueue.settle()
    gated = [store.get(POD, NS, f"a{i}")["spec"].get("schedulingGates") for i in range(4)]
    assert gated == [None, None, None, [GATE]]  # 1 own + 2 borrowed from cq-b; the cohort has no more
    assert usage(store, "cq-a") == {"pool-a": {"cpu": ("3", "2")}}
    # cq-b's own workload has to wait: its quota is lent out (reclaiming would need preemption).
    store.create(POD, pod("b0", queue="lq-b"))
    await kueue.settle()
    assert store.get(POD, NS, "b0")["spec"]["schedulingGates"] == [GATE]
    store.delete(POD, NS, "a0")
    await kueue.settle()
    # Freed quota goes first to the workload that fits its own nominal quota, before the borrower a3.
    assert "schedulingGates" not in store.get(POD, NS, "b0")["spec"]
    assert store.get(POD, NS, "a3")["spec"]["schedulingGates"] == [GATE]


async def test_borrowing_limit_caps_the_borrower(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "1"}, cq="cq-a", lq="lq-a", cohort="lab", borrowing_limit="1")
    setup_queues(store, {"pool-a": "5"}, cq="cq-b", lq="lq-b", cohort="lab")
    for i in range(3):
        store.create(POD, pod(f"a{i}", queue="lq-a"))
    await kueue.settle()
    assert [store.get(POD, NS, f"a{i}")["spec"].get("schedulingGates") for i in range(3)] == [None, None, [GATE]]


async def test_flavor_order_and_fallback(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"local": "1", "remote": "4"})
    store.create(POD, pod("p0"))
    store.create(POD, pod("p1"))
    await kueue.settle()
    assert store.get(POD, NS, "p0")["spec"]["nodeSelector"] == {"pool": "local"}
    assert store.get(POD, NS, "p1")["spec"]["nodeSelector"] == {"pool": "remote"}


async def test_inadmissible_without_local_queue(store: Store, kueue: KueueController) -> None:
    store.create(POD, pod("lost", queue="nowhere"))
    await kueue.settle()
    reserved = condition(workload_of(store, "lost"), "QuotaReserved")
    assert reserved["reason"] == "Inadmissible"
    assert reserved["message"] == "LocalQueue nowhere doesn't exist"


async def test_pods_without_the_label_are_left_alone(store: Store, kueue: KueueController) -> None:
    plain = store.create(POD, pod("plain", queue=""))
    await kueue.settle()
    assert "schedulingGates" not in plain["spec"]
    assert store.list(WORKLOAD, NS)[0] == []


async def test_finished_pod_releases_its_quota(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "1"})
    store.create(POD, pod("done"))
    store.create(POD, pod("waiting"))
    await kueue.settle()

    def succeed(p: dict[str, Any]) -> None:
        p["status"] = {"phase": "Succeeded"}

    store.modify(POD, NS, "done", succeed, subresource="status")
    await kueue.settle()
    finished = condition(workload_of(store, "done"), "Finished")
    assert finished["status"] == "True" and finished["reason"] == "Succeeded"
    assert "schedulingGates" not in store.get(POD, NS, "waiting")["spec"]


async def test_state_is_recomputed_after_a_restart(store: Store) -> None:
    setup_queues(store, {"pool-a": "1"})
    first = KueueController(store)
    await first.start()
    store.create(POD, pod("running"))
    await first.settle()
    await first.stop()
    store.create(POD, pod("later"))  # the webhook still gates it; nobody admits it while the loop is down
    second = KueueController(store)
    await second.start()
    await second.settle()
    try:
        # Usage comes back from the admitted Workload's status: no double admission.
        assert store.get(POD, NS, "later")["spec"]["schedulingGates"] == [GATE]
        assert usage(store, "cq") == {"pool-a": {"cpu": ("1", "0")}}
    finally:
        await second.stop()


async def test_pods_of_a_queued_job_are_not_queued_again(store: Store, kueue: KueueController) -> None:
    setup_queues(store, {"pool-a": "1"})
    owned = pod("train-abcde")
    owned["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                             "uid": "1234", "controller": True}]
    created = store.create(POD, owned)
    await kueue.settle()
    assert "schedulingGates" not in created["spec"]
    assert store.list(WORKLOAD, NS)[0] == []
