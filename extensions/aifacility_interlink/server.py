"""The HTTP face of the plugin (FastAPI). Bodies are parsed here, so every bad request gets a clear 400."""

from __future__ import annotations

import hmac
import json
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
from .contract import LogStruct, Pod, RetrievedPodData
from .service import Conflict, PluginService, UnknownPod
from .volumes import PodError

log = logging.getLogger("aifacility_interlink")
T = TypeVar("T")
_PODS = TypeAdapter(list[Pod])


class BadRequest(ValueError):
    pass


def _describe(exc: ValidationError, what: str) -> str:
    errs = []
    for e in exc.errors()[:8]:
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        errs.append(f"{loc}: {e['msg']}")
    more = f" (and {exc.error_count() - 8} more)" if exc.error_count() > 8 else ""
    return f"{what} has the wrong shape: " + "; ".join(errs) + more


async def _parse(request: Request, adapter: TypeAdapter[T] | type[BaseModel], what: str) -> Any:
    body = await request.body()
    if not body.strip():
        raise BadRequest(f"the request body is empty; expected {what} as JSON")
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc}); expected {what}") from exc
    try:
        if isinstance(adapter, TypeAdapter):
            return adapter.validate_python(raw)
        return adapter.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(_describe(exc, what)) from exc


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(service: PluginService, token: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="aifacility interLink plugin", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        try:
            return await call_next(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        except PodError as exc:
            return _error(400, f"the pod cannot run: {exc}")
        except UnknownPod as exc:
            return _error(404, str(exc))
        except Conflict as exc:
            return _error(409, str(exc))
        except BackendError as exc:
            return _error(502, f"the batch system failed: {exc}")
        except Exception as exc:  # the caller gets a message, the log gets the traceback
            log.exception("unexpected error on %s", request.url.path)
            return _error(500, f"internal error ({type(exc).__name__}: {exc}); see the plugin log")

    @app.post("/create")
    async def create(request: Request) -> JSONResponse:
        data = await _parse(request, RetrievedPodData, "one RetrievedPodData object")
        return JSONResponse((await service.create(data)).model_dump())

    @app.api_route("/delete", methods=["POST", "DELETE"])
    async def delete(request: Request) -> JSONResponse:
        pod = await _parse(request, Pod, "a Kubernetes Pod")
        return JSONResponse({"message": await service.delete(pod)})

    @app.api_route("/status", methods=["GET", "POST"])
    async def status(request: Request) -> JSONResponse:
        pods = await _parse(request, _PODS, "a JSON list of Kubernetes Pods")
        if not pods:  # interLink's health ping
            return JSONResponse(service.ping().model_dump(exclude_none=True))
        return JSONResponse([s.model_dump(exclude_none=True) for s in await service.status(pods)])

    @app.api_route("/getLogs", methods=["GET", "POST"])
    async def get_logs(request: Request) -> Response:
        req = await _parse(request, LogStruct, "a LogStruct")
        o = req.Opts
        if o.Tail and o.Bytes:
            raise BadRequest("Opts.Tail and Opts.Bytes cannot both be set")
        if o.SinceSeconds and o.SinceTime is not None:
            raise BadRequest("Opts.SinceSeconds and Opts.SinceTime cannot both be set")
        out, done = service.log_file(req)
        if o.Previous:
            raise BadRequest(f"previous terminated container {req.ContainerName!r} not found: "
                             "the plugin never restarts containers")
        now = time.time()
        if o.Follow:
            return StreamingResponse(logs.follow(out, done, o, now, out.parent.parent), media_type="text/plain")
        return PlainTextResponse(logs.read(out, o, now))

    return app
