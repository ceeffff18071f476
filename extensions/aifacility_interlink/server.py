"""The HTTP face of the plugin (FastAPI). Bodies are parsed here, so every bad request gets a clear 4xx.

Every request needs the bearer token when one is configured (checked before the body is read), and every
request leaves one line in the access log (logger ``aifacility_interlink.access``): method, path, status,
duration, the pod it was about where known, and the reason of a refusal. Tokens are never logged.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from . import logs
from .backends.base import BackendError
from .bodies import BadRequest, TooLarge, clip, decode_json, read_limited
from .contract import LogStruct, ObjectMeta, Pod, RetrievedPodData
from .service import Conflict, PluginService, UnknownPod
from .volumes import PodError

log = logging.getLogger("aifacility_interlink")
access_log = logging.getLogger("aifacility_interlink.access")
T = TypeVar("T")
_PODS = TypeAdapter(list[Pod])

__all__ = ["BadRequest", "create_app"]


def _describe(exc: ValidationError, what: str) -> str:
    errs = []
    for e in exc.errors()[:8]:
        loc = ".".join(str(p)[:64] for p in e["loc"]) or "(top level)"
        errs.append(f"{loc}: {e['msg']}")
    more = f" (and {exc.error_count() - 8} more)" if exc.error_count() > 8 else ""
    return f"{what} has the wrong shape: " + "; ".join(errs) + more


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _logfmt(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-_./:@" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _about(request: Request, meta: ObjectMeta) -> None:
    """Name the pod a request is about in its access-log line (cut short: a refused name may be huge)."""
    request.state.access.update(namespace=meta.namespace[:253], pod=meta.name[:253], uid=meta.uid[:64])


def create_app(service: PluginService, token: str | None = None) -> FastAPI:
    cfg = service.cfg

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="aifacility interLink plugin", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    async def parse(request: Request, adapter: TypeAdapter[T] | type[BaseModel], what: str) -> Any:
        body = await read_limited(request.headers.get("content-length"), request.stream(), cfg.max_body_bytes)
        raw = decode_json(body, what, cfg.max_json_depth)
        try:
            if isinstance(adapter, TypeAdapter):
                return adapter.validate_python(raw)
            return adapter.model_validate(raw)
        except ValidationError as exc:
            raise BadRequest(_describe(exc, what)) from None

    def refused(request: Request) -> str | None:
        """Why the request is not from the virtual kubelet (None: it is, or no token is configured)."""
        if token is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "no bearer token"
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return "wrong bearer token"
        return None

    async def answer(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        why = refused(request)
        if why is not None:
            request.state.access["reason"] = why
            return _error(401, f"{why}: this plugin answers only its virtual kubelet "
                               "(send Authorization: Bearer <the token in the plugin's token file>)",
                          {"WWW-Authenticate": 'Bearer realm="aifacility-interlink"'})
        status, message = 0, ""
        try:
            return await call_next(request)
        except BadRequest as exc:
            status, message = 400, str(exc)
        except TooLarge as exc:
            status, message = 413, str(exc)
        except PodError as exc:
            status, message = 400, f"the pod cannot run: {exc}"
        except UnknownPod as exc:
            status, message = 404, str(exc)
        except Conflict as exc:
            status, message = 409, str(exc)
        except BackendError as exc:
            status, message = 502, f"the batch system failed: {exc}"
        except Exception as exc:  # the caller gets a message, the log gets the traceback
            log.exception("unexpected error on %s", request.url.path)
            status, message = 500, f"internal error ({type(exc).__name__}); see the plugin log"
        request.state.access["reason"] = message
        return _error(status, message)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.monotonic()
        request.state.access = {}
        response = await answer(request, call_next)
        fields: dict[str, object] = {"method": request.method, "path": request.url.path[:200],
                                     "status": response.status_code,
                                     "ms": f"{(time.monotonic() - start) * 1000:.1f}"}
        fields.update(request.state.access)
        if request.client is not None and request.client.host:
            fields["client"] = f"{request.client.host}:{request.client.port}"
        if "reason" in fields:
            fields["reason"] = str(fields["reason"])[:300]
        level = logging.INFO if response.status_code < 400 else (
            logging.WARNING if response.status_code < 500 else logging.ERROR)
        access_log.log(level, " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items()))
        return response

    @app.post("/create")
    async def create(request: Request) -> JSONResponse:
        data = await parse(request, RetrievedPodData, "one RetrievedPodData object")
        _about(request, data.pod.metadata)
        created = await service.create(data)
        request.state.access["jid"] = created.PodJID
        return JSONResponse(created.model_dump())

    @app.api_route("/delete", methods=["POST", "DELETE"])
    async def delete(request: Request) -> JSONResponse:
        pod = await parse(request, Pod, "a Kubernetes Pod")
        _about(request, pod.metadata)
        return JSONResponse({"message": await service.delete(pod)})

    @app.api_route("/status", methods=["GET", "POST"])
    async def status(request: Request) -> JSONResponse:
        pods = await parse(request, _PODS, "a JSON list of Kubernetes Pods")
        request.state.access["pods"] = len(pods)
        if len(pods) == 1:
            _about(request, pods[0].metadata)
        if not pods:  # interLink's health ping
            return JSONResponse((await service.ping()).model_dump(exclude_none=True))
        return JSONResponse([s.model_dump(exclude_none=True) for s in await service.status(pods)])

    @app.api_route("/getLogs", methods=["GET", "POST"])
    async def get_logs(request: Request) -> Response:
        req = await parse(request, LogStruct, "a LogStruct")
        request.state.access.update(namespace=req.Namespace[:253], pod=req.PodName[:253], uid=req.PodUID[:64],
                                    container=req.ContainerName[:253])
        o = req.Opts
        if o.Tail and o.Bytes:
            raise BadRequest("Opts.Tail and Opts.Bytes cannot both be set")
        if o.SinceSeconds and o.SinceTime is not None:
            raise BadRequest("Opts.SinceSeconds and Opts.SinceTime cannot both be set")
        out, done = service.log_file(req)
        if o.Previous:
            raise BadRequest(f"previous terminated container {clip(req.ContainerName)} not found: "
                             "a restarted container keeps writing to its one log")
        now = time.time()
        if o.Follow:
            return StreamingResponse(logs.follow(out, done, o, now, out.parent.parent), media_type="text/plain")
        return PlainTextResponse(logs.read(out, o, now))

    return app
