"""A job as its owner sees it, from the objects the API server and Kueue keep (as they send them)."""

from __future__ import annotations

from typing import Any

from aifacility.jobs.status import describe, line
from aifacility.kueue.positions import PendingWorkload

JOB: dict[str, Any] = {
    "metadata": {"name": "alice-abc123", "creationTimestamp": "2026-12-05T08:00:00Z", "uid": "u1",
                 "labels": {"aifacility.io/group": "ml", "aifacility.io/kind": "job",
                            "kueue.x-k8s.io/queue-name": "ml", "kueue.x-k8s.io/max-exec-time-seconds": "7200"},
                 "annotations": {"aifacility.io/owner": "alice", "aifacility.io/command": "python train.py"}},
    "spec": {"suspend": True},
}
SITES = {"gpu-a100-01": "local", "vk-hpc-leonardo": "hpc"}


def with_(obj: dict[str, Any], **parts: Any) -> dict[str, Any]:
    return {**obj, **parts}


def cond(kind: str, message: str = "", status: str = "True") -> dict[str, str]:
    return {"type": kind, "status": status, "message": message}


def test_queued_with_position_and_reason() -> None:
    wl = {"status": {"conditions": [cond("QuotaReserved", "couldn't assign flavors to pod set main: insufficient "
                                                           "unused quota for nvidia.com/mig-1g.10gb", "False")]}}
    pos = PendingWorkload("job-alice-abc123", "aifacility", "ml", 0, 2, 1, "Job", "alice-abc123", None)
    m = describe(JOB, None, wl, pos, SITES)
    assert (m["phase"], m["position"], m["user"], m["max_seconds"]) == ("Queued", 2, "alice", 7200)
    assert "insufficient unused quota" in m["waiting_for"]
    assert "position 2" in line(m)


def test_admitted_running_and_succeeded() -> None:
    wl = {"status": {"admission": {"clusterQueue": "ml", "podSetAssignments": [
        {"name": "main", "flavors": {"cpu": "default", "memory": "default",
                                     "nvidia.com/mig-1g.10gb": "mig-1g-10gb"}}]}}}
    job = with_(JOB, spec={"suspend": False}, status={"startTime": "2026-12-05T08:00:05Z"})
    pod = {"spec": {"nodeName": "gpu-a100-01"}, "status": {"phase": "Pending"}}
    assert describe(job, pod, wl, None, SITES)["phase"] == "Starting"
    pod["status"]["phase"] = "Running"
    running = describe(job, pod, wl, None, SITES)
    assert (running["phase"], running["site"], running["admission"]["flavors"]["nvidia.com/mig-1g.10gb"]) == (
        "Running", "local", "mig-1g-10gb")
    done = with_(job, status={"conditions": [cond("Complete")], "completionTime": "2026-12-05T08:01:00Z"})
    pod = {"spec": {"nodeName": "gpu-a100-01"}, "status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "job", "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-12-05T08:01:00Z"}}}]}}
    m = describe(done, pod, wl, None, SITES)
    assert (m["phase"], m["exit_code"], m["finished"]) == ("Succeeded", 0, "2026-12-05T08:01:00Z")


def test_failed_with_its_reason() -> None:
    job = with_(JOB, spec={"suspend": False}, status={"conditions": [cond("Failed", "Job has reached the specified "
                                                                                    "backoff limit")]})
    pod = {"spec": {"nodeName": "vk-hpc-leonardo"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "job", "state": {"terminated": {"exitCode": 3}}}]}}
    m = describe(job, pod, None, None, SITES)
    assert (m["phase"], m["exit_code"], m["site"], m["reason"]) == (
        "Failed", 3, "hpc", "the command exited with code 3")
    no_pod = describe(with_(job, status={"conditions": [cond("Failed", "Job was active longer than specified "
                                                                       "deadline")]}), None, None, None, SITES)
    assert no_pod["reason"] == "Job was active longer than specified deadline"


def test_a_running_job_says_what_its_group_borrows_from_the_cohort() -> None:
    wl = {"status": {"admission": {"clusterQueue": "ml", "podSetAssignments": [
        {"name": "main", "flavors": {"cpu": "default", "memory": "default", "nvidia.com/gpu": "t4"}}]}}}
    job = with_(JOB, spec={"suspend": False})
    pod = {"spec": {"nodeName": "gpu-t4-01"}, "status": {"phase": "Running"}}

    def cq(borrowed_gpus: str) -> dict[str, Any]:  # as Kueue reports it: per flavor, per resource
        return {"status": {"flavorsReservation": [
            {"name": "default", "resources": [{"name": "cpu", "total": "2", "borrowed": "0"},
                                              {"name": "memory", "total": "4Gi", "borrowed": "0"}]},
            {"name": "t4", "resources": [{"name": "nvidia.com/gpu", "total": "4", "borrowed": borrowed_gpus}]},
            {"name": "hpc", "resources": [{"name": "cpu", "total": "90", "borrowed": "10"}]}]}}

    m = describe(job, pod, wl, None, SITES, cq("2"))
    # Only the flavors this job holds: the queue's borrowing on hpc is another job's.
    assert m["borrowing"] == [{"flavor": "t4", "resource": "nvidia.com/gpu", "borrowed": "2"}]
    assert "borrowing from the cohort" in line(m)
    from aifacility.jobs.cli import describe as cli_describe
    assert "group ml is using 2 nvidia.com/gpu on t4 beyond its quota" in cli_describe(m)
    assert describe(job, pod, wl, None, SITES, cq("0"))["borrowing"] == []
    assert describe(job, pod, wl, None, SITES, None)["borrowing"] == []
    # An ended job borrows nothing any more, whatever the queue holds for others now.
    done = with_(job, status={"conditions": [cond("Complete")]})
    assert describe(done, pod, wl, None, SITES, cq("2"))["borrowing"] == []
