"""The extension's REST API in the session (`<base_url>/aifacility/...`, CONTRACT.md): JupyterLab's own
authentication and XSRF checks (jupyter_server's `APIHandler`), JSON in and out, and every refusal as
{"message": ...} with the status the facility gave; the work is FacilityServices' (services.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from aifacility_lab.services import MAX_BODY_BYTES, FacilityServices, ServiceError


class Base(APIHandler):
    @property
    def facility(self) -> FacilityServices:
        return self.settings["aifacility_services"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ServiceError):
            message = exc.message
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message
        else:
            message = "The facility extension failed on this request; its log in the session's terminal says why."
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def body(self) -> Any:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise ServiceError(413, f"The request is {len(self.request.body)} bytes; at most {MAX_BODY_BYTES}.")
        try:
            return json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):
            raise ServiceError(400, "The body must be JSON.") from None

    async def answer(self, work: Callable[[], Awaitable[Any]], status: int = 200, text: bool = False) -> None:
        """Run `work` and answer with its result (JSON, or text/plain with `text`), or with its refusal."""
        try:
            result = await work()
        except ServiceError as e:
            self.set_status(e.status)
            self.finish(json.dumps({"status": e.status, "message": e.message}))
            return
        self.set_status(status)
        if status == 204:
            self.finish()
        elif text:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(result)
        else:
            self.finish(json.dumps(result))


class StatusHandler(Base):
    @web.authenticated
    async def get(self) -> None:
        await self.answer(self.facility.status)


class ExtendHandler(Base):
    @web.authenticated
    async def post(self) -> None:
        await self.answer(lambda: self.facility.extend(self.body()))


class OptionsHandler(Base):
    @web.authenticated
    async def get(self) -> None:
        await self.answer(self.facility.options)


class JobsHandler(Base):
    @web.authenticated
    async def get(self) -> None:
        await self.answer(self.facility.jobs)

    @web.authenticated
    async def post(self) -> None:
        await self.answer(lambda: self.facility.submit(self.body()), status=201)


class JobHandler(Base):
    @web.authenticated
    async def get(self, name: str) -> None:
        await self.answer(lambda: self.facility.job(name))

    @web.authenticated
    async def delete(self, name: str) -> None:
        await self.answer(lambda: self.facility.cancel(name), status=204)


class LogsHandler(Base):
    @web.authenticated
    async def get(self, name: str) -> None:
        await self.answer(lambda: self.facility.logs(name), text=True)


def routes(base_url: str) -> list[tuple[str, type[Base]]]:
    prefix = url_path_join(base_url, "aifacility")
    job = r"(?P<name>[^/]{1,253})"
    return [
        (url_path_join(prefix, "status"), StatusHandler),
        (url_path_join(prefix, "extend"), ExtendHandler),
        (url_path_join(prefix, "options"), OptionsHandler),
        (url_path_join(prefix, "jobs"), JobsHandler),
        (url_path_join(prefix, "jobs", job), JobHandler),
        (url_path_join(prefix, "jobs", job, "logs"), LogsHandler),
    ]
