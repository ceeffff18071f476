"""GET .../pods/<name>/log: options as Kubernetes parses them, streamed from the node's log provider."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from aiohttp import web

from .. import kinds
from ..logs import LOG_REGISTRY_KEY, LogOptions, LogsUnavailable, log_path
from .errors import ApiError
from .request import Target, flag, integer
from .state import STORE_KEY

CLIENT_CHECK_SECONDS = 5.0
FIRST_ANSWER_FOLLOW_SECONDS = 2.0


def _container(pod: dict, requested: str | None) -> str:
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    init_names = [c.get("name") for c in spec.get("initContainers") or []]
    name = pod["metadata"]["name"]
    if requested:
        if requested not in names and requested not in init_names:
            raise ApiError(
                400,
                f"container {requested} is not valid for pod {name}",
            )
        return requested
    if len(names) == 1:
        return str(names[0])
    choices = " ".join(str(n) for n in names)
    message = f"a container name must be specified for pod {name}, choose one of: [{choices}]"
    if init_names:
        message += f" or one of the init containers: [{' '.join(str(n) for n in init_names)}]"
    raise ApiError(400, message)


def _check_available(request: web.Request, pod: dict, opts: LogOptions) -> None:
    """Kubernetes' 400s for logs that cannot exist yet (no node, container not started, no previous run)."""
    name = pod["metadata"]["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise ApiError(400, f"pod {name} does not have a host assigned")
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    cs = next((c for c in statuses if isinstance(c, dict) and c.get("name") == opts.container), None)
    registry = request.app[LOG_REGISTRY_KEY]
    if node in registry.providers:
        return  # a remote provider knows better than the local files
    state_dir = registry.state_dir
    if opts.previous:
        if state_dir is None or not log_path(state_dir, pod, opts.container, previous=True).exists():
            raise ApiError(400, f'previous terminated container "{opts.container}" in pod "{name}" not found')
        return
    waiting = ((cs or {}).get("state") or {}).get("waiting")
    if waiting is not None and not (cs or {}).get("restartCount"):
        no_file = state_dir is None or not log_path(state_dir, pod, opts.container).exists()
        if no_file:
            reason = waiting.get("reason") or "ContainerCreating"
            raise ApiError(400, f'container "{opts.container}" in pod "{name}" is waiting to start: {reason}')


def _since_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.strptime(raw.rstrip("Z")[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise ApiError(400, f"sinceTime: Invalid value: {raw!r}: must be an RFC 3339 time") from None


async def pod_log(request: web.Request, t: Target) -> web.StreamResponse:
    assert t.name is not None and t.kind is kinds.POD
    pod = request.app[STORE_KEY].get(kinds.POD, t.namespace, t.name)
    q = request.query
    opts = LogOptions(
        container=_container(pod, q.get("container")),
        tail_lines=integer(request, "tailLines", 0),
        limit_bytes=integer(request, "limitBytes", 1),
        since_seconds=integer(request, "sinceSeconds", 1),
        since_time=_since_time(q.get("sinceTime")),
        timestamps=flag(request, "timestamps"),
        follow=flag(request, "follow"),
        previous=flag(request, "previous"),
    )
    if opts.since_seconds is not None and opts.since_time is not None:
        raise ApiError(400, "at most one of sinceTime or sinceSeconds may be specified")
    _check_available(request, pod, opts)
    provider = request.app[LOG_REGISTRY_KEY].provider_for(pod)
    stream = provider.stream(pod, opts.container, opts)
    chunks = stream.__aiter__()
    first: asyncio.Future[bytes] = asyncio.ensure_future(chunks.__anext__())
    # Hold the status line until the provider has answered (a follower's first line may take long: then only
    # briefly), so that logs that cannot be read at all get a Status error, not a 200 with an error as text.
    await asyncio.wait({first}, timeout=FIRST_ANSWER_FOLLOW_SECONDS if opts.follow else None)
    err = first.exception() if first.done() else None
    if isinstance(err, LogsUnavailable):
        await _close(stream)
        raise ApiError(err.code, err.message)
    pending: asyncio.Future[bytes] | None = first
    response = web.StreamResponse(status=200)
    response.content_type = "text/plain"
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        while True:
            if pending is None:
                pending = asyncio.ensure_future(chunks.__anext__())
            # A follower that went away while the container was quiet is noticed here, not at the next line.
            done, _ = await asyncio.wait({pending}, timeout=CLIENT_CHECK_SECONDS)
            if not done:
                if request.transport is None or request.transport.is_closing():
                    break
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                break
            except LogsUnavailable as e:  # after the status line: told in the body, as the kubelet does
                await response.write(f"{e.message}\n".encode())
                break
            await response.write(chunk)
        if request.transport is not None and not request.transport.is_closing():
            await response.write_eof()
    except ConnectionResetError:
        pass  # the client stopped following
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, LogsUnavailable):
                await pending
        await _close(stream)
    return response


async def _close(stream: object) -> None:
    close = getattr(stream, "aclose", None)  # providers are usually async generators
    if close is not None:
        await close()
