"""`kubectl logs` for pods on a virtual node: the plugin's `/getLogs`, streamed when following."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aifacility.embedded.nodeagent.podlogs import LogOptions, LogsUnavailable
from aifacility.embedded.virtualnode.provider import JOB_ID, UNREACHABLE
from aifacility_interlink.client import PluginClient, PluginError

# A followed log may stay open for as long as the container runs; only connecting has a time limit.
FOLLOW_TIMEOUT_SECONDS = 7 * 24 * 3600.0


def log_request(pod: dict[str, Any], container: str, opts: LogOptions) -> dict[str, Any]:
    """The LogStruct for one container (Tail/Bytes and SinceSeconds/SinceTime are already exclusive)."""
    meta = pod["metadata"]
    o: dict[str, Any] = {"Timestamps": opts.timestamps, "Follow": opts.follow, "Previous": opts.previous}
    if opts.tail_lines is not None:
        o["Tail"] = opts.tail_lines
    if opts.limit_bytes is not None:
        o["Bytes"] = opts.limit_bytes
    if opts.since_seconds is not None:
        o["SinceSeconds"] = opts.since_seconds
    elif opts.since_time is not None:
        o["SinceTime"] = opts.since_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"Namespace": meta.get("namespace"), "PodUID": meta["uid"], "PodName": meta["name"],
            "ContainerName": container, "Opts": o}


def _no_job_message(pod: dict[str, Any], container: str) -> str:
    """Why a container of a pod that never became a batch job has no logs, from its state in the pod."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if cs.get("name") != container:
            continue
        state = cs.get("state") or {}
        if state.get("terminated"):  # e.g. ProviderFailed: the plugin refused the pod
            t = state["terminated"]
            why = f"{t.get('reason') or 'Error'}: {t['message']}" if t.get("message") else t.get("reason") or "Error"
            return (f'container "{container}" in pod "{name}" is terminated ({why}); it never ran on the '
                    "batch system, so it has no logs")
        reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
        return f'container "{container}" in pod "{name}" is waiting to start: {reason}'
    return f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'


class InterLinkLogProvider:
    """A LogProvider (see `nodeagent/podlogs.py`) for one virtual node, served by its kubelet endpoint."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token

    async def stream(self, pod: dict[str, Any], container: str, opts: LogOptions) -> AsyncIterator[bytes]:
        if not (pod["metadata"].get("annotations") or {}).get(JOB_ID):
            # Not a batch job (yet, or ever): nothing to read; say what state the container is in.
            raise LogsUnavailable(400, _no_job_message(pod, container))
        timeout = FOLLOW_TIMEOUT_SECONDS if opts.follow else 60.0
        started = False
        try:
            async with PluginClient(self.url, self.token, timeout=timeout) as client:
                req = log_request(pod, container, opts)
                if opts.follow:
                    async for chunk in client.follow_logs(req):
                        started = True
                        yield chunk.encode()
                else:
                    yield (await client.logs(req)).encode()
        except PluginError as e:
            message = f"unable to retrieve container logs from the interLink plugin: {e.message}"
            if not started:
                raise LogsUnavailable(500, message) from None
            yield f"{message}\n".encode()  # the response has begun: told in the body, as the kubelet does
        except UNREACHABLE as e:
            message = (f"unable to retrieve container logs: the interLink plugin at {self.url} cannot be reached "
                       f"({e or type(e).__name__})")
            if not started:
                raise LogsUnavailable(500, message) from None
            yield f"{message}\n".encode()
