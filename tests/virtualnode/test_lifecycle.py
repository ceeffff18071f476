"""Init containers, followed logs, and a node agent restarted under its running batch jobs."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from vnode_helpers import Kubectl, OffloadCluster, offload_pod, squeue, until

from aifacility.embedded.controlplane import build
from aifacility_interlink.localslurm import LocalSlurm

pytestmark = pytest.mark.slurm


async def status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict((await kubectl.get("pod", name)).get("status") or {})


async def test_init_container_then_main_with_followed_logs(cluster: OffloadCluster, kubectl: Kubectl) -> None:
    await kubectl.apply(offload_pod("staged", "for i in 1 2 3; do echo tick $i; sleep 1; done",
                                    init="echo preparing; sleep 3"))
    seen: list[tuple[Any, Any]] = []

    async def record() -> bool:
        s = await status(kubectl, "staged")
        state = (s.get("phase"), s.get("reason"))
        if state[0] and (not seen or seen[-1] != state):
            seen.append(state)
        return s.get("phase") == "Running"

    await until(record, 90, every=0.1)
    assert ("Pending", "Init") in seen, seen
    # Followed from the start, through the API server: every line arrives and kubectl returns when it ends.
    followed = await kubectl("logs", "-f", "staged", "-c", "main")
    assert followed.splitlines() == ["tick 1", "tick 2", "tick 3"]
    await until(lambda: _phase_is(kubectl, "staged", "Succeeded"), 60)
    s = await status(kubectl, "staged")
    assert s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert "reason" not in s
    assert (await kubectl("logs", "staged", "-c", "prepare")).strip() == "preparing"
    init_cond = next(c for c in s["conditions"] if c["type"] == "Initialized")
    assert init_cond["status"] == "True"
    await kubectl("delete", "pod", "staged", "--wait=true", "--timeout=60s")


async def _phase_is(kubectl: Kubectl, name: str, phase: str) -> bool:
    return (await status(kubectl, name)).get("phase") == phase


async def test_restarted_agent_follows_its_jobs_and_cancels_what_was_deleted(
        cluster: OffloadCluster, kubectl: Kubectl, slurm: LocalSlurm) -> None:
    await kubectl.apply(offload_pod("survivor", "echo begin; sleep 8; echo end"),
                        offload_pod("doomed", "sleep 600"))
    for name in ("survivor", "doomed"):
        await until(lambda: _phase_is(kubectl, name, "Running"), 90)  # noqa: B023
    jids = {n: (await kubectl.get("pod", n))["metadata"]["annotations"]["JobID"] for n in ("survivor", "doomed")}

    def delete_while_down() -> None:
        # The node agent is down; the jobs keep running on SLURM. A deletion is accepted meanwhile: the pod gets
        # a deletionTimestamp and waits for its kubelet, which is not there.
        assert squeue(slurm, jids["doomed"]) == "RUNNING"
        subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "-n", "default",
                        "delete", "pod", "doomed", "--wait=false"], check=True, capture_output=True, timeout=60)

    cluster.restart_agent(between=delete_while_down)
    await until(lambda: _phase_is(kubectl, "survivor", "Succeeded"), 90)
    survivor = await kubectl.get("pod", "survivor")
    assert survivor["metadata"]["annotations"]["JobID"] == jids["survivor"]
    events = json.loads(await kubectl("get", "events", "--field-selector", "involvedObject.name=survivor",
                                      "-o", "json"))["items"]
    submitted = [e for e in events if e["reason"] == "Submitted"]
    assert [e["count"] for e in submitted] == [1]  # followed after the restart, not submitted again
    await until(lambda: squeue(slurm, jids["doomed"]) == "", 30)
    await until(lambda: _gone(kubectl, "doomed"), 30)
    assert (await kubectl("logs", "survivor")).splitlines() == ["begin", "end"]
    await kubectl("delete", "pod", "survivor", "--wait=true", "--timeout=60s")


async def _gone(kubectl: Kubectl, name: str) -> bool:
    return "NotFound" in await kubectl("get", "pod", name, check=False)
