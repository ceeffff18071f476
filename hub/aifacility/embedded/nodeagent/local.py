"""The local process provider: runs a node's pods as sandboxed local processes (see `agent/runner.py`)."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from aifacility.embedded.nodeagent.events import now
from aifacility.embedded.nodeagent.ipam import PodIPs
from aifacility.embedded.nodeagent.provider import Pod
from aifacility.embedded.nodeagent.runner import NodeContext, PodRunner, pod_dir

# How long the containers get to exit on SIGTERM when the whole cluster stops (pods keep their own grace
# period for deletions; a stopping node agent should not wait 30 s per notebook).
SHUTDOWN_GRACE_SECONDS = 3.0
# Whose a pod is (KubeSpawner's label): on a shared network the node runs one user's pods only.
USER_LABEL = "hub.jupyter.org/username"


class LocalProcessProvider:
    """PodLifecycleHandler for one local node."""

    def __init__(self, ctx: NodeContext, ips: PodIPs) -> None:
        self.ctx = ctx
        self._ips = ips
        self._runners: dict[str, PodRunner] = {}  # pod uid -> runner

    async def create_pod(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._runners:
            return
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        was_running = status.get("phase") == "Running"
        restart_policy = pod["spec"].get("restartPolicy") or "Always"
        if was_running and restart_policy == "Never":
            # The node restarted under a pod that must not run twice: the kubelet fails it.
            self._fail_lost(pod)
            return
        network = self.ctx.network
        refusal = network.admit(uid, (pod["metadata"].get("labels") or {}).get(USER_LABEL)) if network else None
        if refusal is not None:
            self._reject(pod, "NetworkIsolationUnavailable", refusal)
            return
        ip = self._ips.allocate(uid, status.get("podIP"))
        runner = PodRunner(pod, self.ctx, ip)
        if was_running:
            self._mark_restarted(runner, pod)
        self._runners[uid] = runner
        runner.start()

    def _mark_restarted(self, runner: PodRunner, pod: Pod) -> None:
        """After a node restart every container is a new instance: restartCount+1, lastState kept."""
        old = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        for cs in runner.containers:
            prev = old.get(cs.name)
            if prev is None:
                continue
            cs.restart_count = int(prev.get("restartCount") or 0) + 1
            state = prev.get("state") or {}
            started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
            cs.last_state = {"terminated": {"exitCode": 255, "reason": "Unknown", "startedAt": started,
                                            "finishedAt": now(),
                                            "message": "The node was restarted while the container ran"}}

    def _reject(self, pod: Pod, reason: str, message: str) -> None:
        """Admission refused by the node, as the kubelet fails a pod it cannot admit: phase Failed, why."""
        self.ctx.events.record(pod, reason, message, type="Warning")
        self.ctx.notify(pod, {**(pod.get("status") or {}), "phase": "Failed", "reason": reason, "message": message})

    def _fail_lost(self, pod: Pod) -> None:
        stamp = now()
        status = dict(pod.get("status") or {})
        statuses = []
        for s in status.get("containerStatuses") or []:
            s = dict(s)
            if "terminated" not in (s.get("state") or {}):
                s["state"] = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                             "message": "The container could not be located when the pod was "
                                                        "terminated", "finishedAt": stamp}}
            s["ready"] = False
            s["started"] = False
            statuses.append(s)
        status["containerStatuses"] = statuses
        status["phase"] = "Failed"
        status["reason"] = "NodeRestart"
        status["message"] = "The node restarted while the pod ran and its restartPolicy is Never"
        status["conditions"] = [
            {**c, "status": "False", "reason": "PodCompleted", "lastTransitionTime": stamp}
            if c.get("type") in ("Ready", "ContainersReady") else c
            for c in status.get("conditions") or []]
        self.ctx.notify(pod, status)

    async def update_pod(self, pod: Pod) -> None:
        """New labels or annotations, or a Secret or ConfigMap it mounts changed: its volumes' files follow."""
        runner = self._runners.get(pod["metadata"]["uid"])
        if runner is not None:
            runner.pod["metadata"] = pod["metadata"]  # labels/annotations for the downward API
            await runner.refresh_volumes()

    async def delete_pod(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        runner = self._runners.pop(uid, None)
        if runner is not None:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            await runner.stop(float(grace))
        self._ips.release(uid)
        if self.ctx.network is not None:
            self.ctx.network.forget(uid)
        directory = pod_dir(self.ctx.state_dir, pod)
        # emptyDirs and rendered volumes end with the pod (PVC and NFS data live elsewhere).
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        for r in self._runners.values():
            if r.namespace == namespace and r.name == name:
                return r.pod
        return None

    async def get_pod_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        for r in self._runners.values():
            if r.namespace == namespace and r.name == name:
                return r.status()
        return None

    async def get_pods(self) -> list[Pod]:
        return [r.pod for r in self._runners.values()]

    async def shutdown(self) -> None:
        runners = list(self._runners.values())
        self._runners.clear()
        await asyncio.gather(*(r.stop(SHUTDOWN_GRACE_SECONDS, shutdown=True) for r in runners))

    def pids(self) -> list[int]:
        return [pid for r in self._runners.values() for pid in r.pids()]
