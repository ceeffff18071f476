"""The kubelet endpoint of each node: what the API server calls for `kubectl logs` (and `-f`) and `kubectl exec`.

It listens on the node's InternalIP and port 10250 over TLS with the node's serving certificate, and answers
only the API server: a client certificate from the cluster CA whose name is the API server's kubelet client.
Exec is the remotecommand WebSocket protocol (`remotecommand.py`), run in the container's sandbox.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from aifacility.embedded.nodeagent.podlogs import FileLogProvider, LogOptions, LogProvider, LogsUnavailable
from aifacility.embedded.nodeagent.remotecommand import ExecError, ExecOptions, serve_exec
from aifacility.embedded.nodeagent.runner import Sandbox, running_sandbox

KUBELET_PORT = 10250
PodGetter = Callable[[str, str], dict[str, Any] | None]
# (pod uid, container) -> the running container's sandbox, None when it does not run here
SandboxGetter = Callable[[str, str], Sandbox | None]


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{value!r} is not an integer") from None


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def log_options(container: str, q: Any) -> LogOptions:
    since_time = None
    if q.get("sinceTime"):
        try:
            since_time = datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
        except ValueError:
            raise web.HTTPBadRequest(text=f"sinceTime {q['sinceTime']!r} is not an RFC 3339 time") from None
    return LogOptions(container=container, tail_lines=_int(q.get("tailLines")), limit_bytes=_int(q.get("limitBytes")),
                      since_seconds=_int(q.get("sinceSeconds")), since_time=since_time,
                      timestamps=_bool(q.get("timestamps")), follow=_bool(q.get("follow")),
                      previous=_bool(q.get("previous")))


def make_app(pod_getter: PodGetter, logs: LogProvider, allowed_client: str,
             sandboxes: SandboxGetter = running_sandbox) -> web.Application:
    @web.middleware
    async def only_the_api_server(request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        names = [v for rdn in (peer or {}).get("subject", ()) for k, v in rdn if k == "commonName"]
        if request.path != "/healthz" and names != [allowed_client]:
            raise web.HTTPForbidden(text="only the API server may call the kubelet endpoint")
        return await handler(request)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def container_logs(request: web.Request) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        pod = pod_getter(ns, name)
        if pod is None:
            raise web.HTTPNotFound(text=f"pod {ns}/{name} is not on this node")
        opts = log_options(container, request.query)
        stream = logs.stream(pod, container, opts)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        try:
            first = await anext(stream, None)
        except LogsUnavailable as e:
            raise web.HTTPBadRequest(text=e.message) if e.code == 400 else web.HTTPInternalServerError(
                text=e.message) from None
        await response.prepare(request)
        if first is not None:
            await response.write(first)
            async for chunk in stream:
                await response.write(chunk)
        await response.write_eof()
        return response

    async def exec_(request: web.Request) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            pod = pod_getter(ns, name)
            if pod is None:
                raise ExecError(404, "pod does not exist")
            uid = request.match_info.get("uid")
            if uid and uid != pod["metadata"]["uid"]:
                raise ExecError(404, "pod not found")
            spec = pod["spec"]
            if not any(c.get("name") == container
                       for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]):
                raise ExecError(404, f"container not found ({container!r})")
            opts = ExecOptions.parse(request.query)
            sandbox = sandboxes(pod["metadata"]["uid"], container)
            if sandbox is None:
                raise ExecError(400, f"container {container!r} in pod {ns}/{name} is not running")
            if request.headers.get("Upgrade", "").lower() != "websocket":
                # kubectl falls back to SPDY when its WebSocket upgrade fails; this kubelet speaks WebSockets only.
                raise ExecError(400, "this kubelet serves exec over WebSockets (v5.channel.k8s.io, "
                                "v4.channel.k8s.io) only, not SPDY")
        except ExecError as e:
            return web.Response(status=e.code, text=e.message)
        return await serve_exec(request, sandbox, opts)

    app = web.Application(middlewares=[only_the_api_server])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    for path in ("/exec/{namespace}/{pod}/{container}", "/exec/{namespace}/{pod}/{uid}/{container}"):
        app.router.add_get(path, exec_)
        app.router.add_post(path, exec_)
    return app


def server_ssl(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # /healthz without a certificate; everything else checks the name
    return ctx


class KubeletServer:
    def __init__(self, host: str, pod_getter: PodGetter, state_dir: Path, cert: Path, key: Path, ca: Path,
                 allowed_client: str, logs: LogProvider | None = None, port: int = KUBELET_PORT) -> None:
        self.host, self.port = host, port
        self.app = make_app(pod_getter, logs or FileLogProvider(state_dir, pod_getter), allowed_client)
        self.ssl = server_ssl(cert, key, ca)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=0.3, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
