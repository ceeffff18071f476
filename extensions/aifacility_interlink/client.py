"""A typed async client of the plugin contract, as interLink (or the devcluster's virtual node) calls it.

    async with PluginClient("http://127.0.0.1:4000", token=read_token_file(path)) as c:
        created = await c.create(retrieved_pod_data)
        statuses = await c.status([pod])

A plugin started with a token answers every request without it 401; `token_from_env()` is how a virtual node
started by `aifacility up` finds its plugin's token (the file named by AIFACILITY_INTERLINK_TOKEN_FILE).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from .contract import CreateStruct, LogStruct, PingResponse, Pod, PodStatus, RetrievedPodData


class PluginError(RuntimeError):
    """The plugin answered with an error status; ``status`` and ``message`` say which and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"plugin answered {status}: {message}")
        self.status = status
        self.message = message


TOKEN_FILE_ENV = "AIFACILITY_INTERLINK_TOKEN_FILE"


def read_token_file(path: Path) -> str:
    """The bearer token in `path` (one line); ValueError says what is wrong with the file."""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the interLink plugin token file {path}: {exc}") from None
    if not token:
        raise ValueError(f"the interLink plugin token file {path} is empty")
    return token


def token_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The token in the file AIFACILITY_INTERLINK_TOKEN_FILE names, or None where it names none."""
    path = environ.get(TOKEN_FILE_ENV)
    return read_token_file(Path(path)) if path else None


def _dump(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True, by_alias=True)
    return obj


class PluginClient:
    """``url`` is ``http://host:port`` or ``unix:///path/to.sock``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self._socket: str | None = None
        if url.startswith("unix:"):
            self._socket = url.removeprefix("unix:").removeprefix("//")
            url = "http://localhost"
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PluginClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.UnixConnector(path=self._socket) if self._socket else None
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers, connector=connector)
        return self._session

    async def _call(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        async with self._s().request(method, self.url + path, data=json.dumps(body),
                                     headers={"Content-Type": "application/json"}) as r:
            raw = await r.read()
            if r.status >= 400:
                try:
                    msg = json.loads(raw).get("error", raw.decode(errors="replace"))
                except (ValueError, AttributeError):
                    msg = raw.decode(errors="replace")
                raise PluginError(r.status, msg)
            return r.status, raw

    async def create(self, data: RetrievedPodData | dict[str, Any]) -> CreateStruct:
        _, raw = await self._call("POST", "/create", _dump(data))
        return CreateStruct.model_validate_json(raw)

    async def delete(self, pod: Pod | dict[str, Any]) -> str:
        _, raw = await self._call("POST", "/delete", _dump(pod))
        return str(json.loads(raw).get("message", ""))

    async def status(self, pods: list[Pod] | list[dict[str, Any]]) -> list[PodStatus]:
        _, raw = await self._call("GET", "/status", [_dump(p) for p in pods])
        return [PodStatus.model_validate(x) for x in json.loads(raw)]

    async def ping(self) -> PingResponse:
        _, raw = await self._call("GET", "/status", [])
        return PingResponse.model_validate_json(raw)

    async def logs(self, req: LogStruct | dict[str, Any]) -> str:
        _, raw = await self._call("GET", "/getLogs", _dump(req))
        return raw.decode(errors="replace")

    async def follow_logs(self, req: LogStruct | dict[str, Any]) -> AsyncIterator[str]:
        """Stream a container's log until it ends (sets Opts.Follow)."""
        body = _dump(req)
        body.setdefault("Opts", {})["Follow"] = True
        async with self._s().request("GET", self.url + "/getLogs", data=json.dumps(body),
                                     headers={"Content-Type": "application/json"}) as r:
            if r.status >= 400:
                raise PluginError(r.status, (await r.read()).decode(errors="replace"))
            async for chunk in r.content.iter_any():
                yield chunk.decode(errors="replace")
