"""Pod phase and conditions from container states, following the kubelet's `getPhase` and status manager."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aifacility.embedded.nodeagent.events import now


@dataclass
class ContainerState:
    """What the agent knows about one container (init or regular) of a pod."""

    name: str
    image: str = ""
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    restart_count: int = 0
    container_id: str = ""
    # An init container with restartPolicy Always: a sidecar that keeps running next to the containers.
    sidecar: bool = False

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> dict[str, Any] | None:
        return self.state.get("terminated")

    def succeeded(self) -> bool:
        t = self.terminated
        return t is not None and t.get("exitCode") == 0

    def initialized(self) -> bool:
        """Done as an init container: succeeded, or (a sidecar) started at least once."""
        started = self.running or bool(self.last_state) or self.terminated is not None
        return self.succeeded() or (self.sidecar and started)

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": "",
            "started": self.running,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def pod_phase(init: list[ContainerState], containers: list[ContainerState], restart_policy: str,
              init_failed: bool) -> str:
    if init_failed:
        return "Failed"
    if any(not c.initialized() for c in init):
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for c in containers:
        if c.running:
            running += 1
        elif c.terminated is not None:
            stopped += 1
            if c.succeeded():
                succeeded += 1
        elif c.last_state.get("terminated"):
            stopped += 1  # waiting to restart after a run: still counted as having run (kubelet)
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"  # OnFailure: the failed ones restart
    return "Pending"


def _cond(type_: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": "True" if ok else "False", "lastProbeTime": None,
                         "lastTransitionTime": now()}
    if not ok and reason:
        c["reason"] = reason
    if not ok and message:
        c["message"] = message
    return c


def conditions(init: list[ContainerState], containers: list[ContainerState], phase: str,
               sandbox_ready: bool) -> list[dict[str, Any]]:
    pending_init = [c.name for c in init if not c.initialized()]
    unready = [c.name for c in containers if not c.ready]
    completed = phase in ("Succeeded", "Failed")
    if completed:
        ready_reason = "PodCompleted"
        unready_msg = ""
    else:
        ready_reason = "ContainersNotReady"
        unready_msg = f"containers with unready status: [{' '.join(unready)}]"
    initialized = not pending_init
    init_reason = "PodCompleted" if completed else "ContainersNotInitialized"
    return [
        _cond("PodReadyToStartContainers", sandbox_ready and not completed),
        _cond("Initialized", initialized or (completed and not pending_init), init_reason,
              f"containers with incomplete status: [{' '.join(pending_init)}]"),
        _cond("Ready", not unready and not completed, ready_reason, unready_msg),
        _cond("ContainersReady", not unready and not completed, ready_reason, unready_msg),
    ]


def merge_conditions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New conditions, keeping lastTransitionTime where the status did not change and others' conditions."""
    by_type = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = by_type.pop(c["type"], None)
        if prev is not None and prev.get("status") == c["status"]:
            c["lastTransitionTime"] = prev.get("lastTransitionTime") or c["lastTransitionTime"]
        out.append(c)
    # PodScheduled (the scheduler's) and readiness gates' conditions stay as they are, first like in Kubernetes.
    return [*by_type.values(), *out]
