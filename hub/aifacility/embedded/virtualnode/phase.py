"""A plugin's PodStatus turned into the pod's status, as interLink's virtual kubelet does it.

- all containers terminated with exit 0 -> Succeeded
- all terminated, any non-zero exit (containers or init containers) -> Failed
- an init container failed -> Failed, the containers it held back waiting (PodInitializing), as the kubelet shows
  them
- any container running -> Running (Ready once every container is ready, as the plugin reports it)
- init containers still running -> Pending, reason Init; anything waiting -> Pending
The phase never goes back (Running does not return to Pending; Succeeded/Failed are final), as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aifacility.embedded.nodeagent.events import now
from aifacility.embedded.nodeagent.status import ContainerState, conditions

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
_ORDER = {"Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}


def _container(remote: Mapping[str, Any], image: str) -> ContainerState:
    state = {k: v for k, v in (remote.get("state") or {}).items() if v is not None}
    if not state:
        state = {"waiting": {"reason": "ContainerCreating"}}
    elif (state.get("terminated") or {}).get("reason") == "InitContainerFailed":
        # Never started, because an init container failed: the kubelet leaves such a container waiting.
        state = {"waiting": {"reason": "PodInitializing"}}
    # Ready as the plugin says (its readiness probes run next to the container); a plugin that does not say
    # reports a running container as ready.
    ready = "running" in state and bool(remote.get("ready", True))
    last = {k: v for k, v in (remote.get("lastState") or {}).items() if v is not None}
    return ContainerState(name=str(remote.get("name")), image=str(remote.get("image") or image), state=state,
                          last_state=last, ready=ready, restart_count=int(remote.get("restartCount") or 0))


def _ordered(spec_containers: list[Obj], remote: list[Obj]) -> list[ContainerState]:
    """One status per container of the spec, in spec order (a container the plugin did not report waits)."""
    by_name = {str(r.get("name")): r for r in remote}
    out = []
    for c in spec_containers:
        r = by_name.get(str(c.get("name")))
        out.append(_container(r, str(c.get("image") or "")) if r is not None
                   else ContainerState(name=str(c.get("name")), image=str(c.get("image") or "")))
    return out


def phase_of(init: list[ContainerState], containers: list[ContainerState]) -> tuple[str, str]:
    """(phase, reason) from the container states, per the rules above."""
    every = [*init, *containers]
    if any(c.terminated is not None and not c.succeeded() for c in init):
        return "Failed", ""  # the batch job ran its init containers once (restartPolicy Never, for the kubelet)
    if containers and all(c.terminated is not None for c in every):
        return ("Failed" if any(not c.succeeded() for c in every) else "Succeeded"), ""
    if any(c.running for c in containers):
        return "Running", ""
    if any(c.terminated is None for c in init):
        return "Pending", "Init"
    return "Pending", ""


def pod_status(pod: Mapping[str, Any], remote: Mapping[str, Any]) -> Obj:
    """The status fields to write for one PodStatus of the plugin (merged into the pod's status)."""
    spec = pod.get("spec") or {}
    init = _ordered(spec.get("initContainers") or [], list(remote.get("initContainers") or []))
    containers = _ordered(spec.get("containers") or [], list(remote.get("containers") or []))
    phase, reason = phase_of(init, containers)
    current = (pod.get("status") or {}).get("phase") or "Pending"
    if current in TERMINAL or _ORDER[phase] < _ORDER.get(current, 0):
        phase, reason = current, ""
    out: Obj = {
        "phase": phase,
        "initContainerStatuses": [c.to_status() for c in init],
        "containerStatuses": [c.to_status() for c in containers],
        "conditions": conditions(init, containers, phase, sandbox_ready=True),
    }
    if phase in TERMINAL:
        # Terminated containers are not ready, whatever the plugin said.
        for cs in out["containerStatuses"] + out["initContainerStatuses"]:
            cs["ready"] = False
    out["reason"] = reason or None
    return out


def pending_status(pod: Mapping[str, Any], reason: str, message: str, host_ip: str) -> Obj:
    """Before the plugin accepted the pod: Pending, every container waiting with `reason`."""
    spec = pod.get("spec") or {}
    waiting = {"waiting": {"reason": reason, "message": message}}
    init = [ContainerState(name=str(c.get("name")), image=str(c.get("image") or ""), state=dict(waiting))
            for c in spec.get("initContainers") or []]
    containers = [ContainerState(name=str(c.get("name")), image=str(c.get("image") or ""), state=dict(waiting))
                  for c in spec.get("containers") or []]
    status: Obj = {
        "phase": "Pending",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "initContainerStatuses": [c.to_status() for c in init],
        "containerStatuses": [c.to_status() for c in containers],
        "conditions": conditions(init, containers, "Pending", sandbox_ready=False),
    }
    if not (pod.get("status") or {}).get("startTime"):
        status["startTime"] = now()
    return status


def failed_status(pod: Mapping[str, Any], reason: str, message: str) -> Obj:
    """The pod could not be created (interLink's ProviderFailed): Failed, every container terminated."""
    spec = pod.get("spec") or {}
    stamp = now()
    term = {"terminated": {"exitCode": 1, "reason": reason, "message": message, "finishedAt": stamp}}
    init = [ContainerState(name=str(c.get("name")), image=str(c.get("image") or ""), state=dict(term))
            for c in spec.get("initContainers") or []]
    containers = [ContainerState(name=str(c.get("name")), image=str(c.get("image") or ""), state=dict(term))
                  for c in spec.get("containers") or []]
    return {
        "phase": "Failed",
        "reason": reason,
        "message": message,
        "initContainerStatuses": [c.to_status() for c in init],
        "containerStatuses": [c.to_status() for c in containers],
        "conditions": conditions(init, containers, "Failed", sandbox_ready=False),
    }
