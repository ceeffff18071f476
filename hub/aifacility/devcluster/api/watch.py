"""Watch streams: newline-delimited {"type", "object"} events, as the real API server sends them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from ..store import StoreError, WatchEvent
from . import tables
from .errors import ApiError
from .fields import check_field_selector
from .request import Target, flag, integer
from .state import API_STORE_KEY, OPEN_WATCHES_KEY, SETTINGS_KEY

Obj = dict[str, Any]
CLIENT_CHECK_SECONDS = 5.0
DEFAULT_TIMEOUT_SECONDS = 1800  # the real server picks 30-60 minutes; clients re-watch anyway


def wants_watch(request: web.Request) -> bool:
    return flag(request, "watch")


def _line(event_type: str, obj: Obj) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


async def serve_watch(request: web.Request, t: Target) -> web.StreamResponse:
    q = request.query
    store = request.app[API_STORE_KEY]
    settings = request.app[SETTINGS_KEY]
    timeout = integer(request, "timeoutSeconds", 0)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_SECONDS
    bookmarks = flag(request, "allowWatchBookmarks")
    send_initial = q.get("sendInitialEvents")
    rv = q.get("resourceVersion") or None
    as_table = tables.wants_table(request.headers.get("Accept", ""))
    metadata_only = tables.wants_metadata_only(request.headers.get("Accept", ""))
    include = q.get("includeObject", "Metadata") or "Metadata"
    if send_initial not in (None, "", "true", "false"):
        raise ApiError(400, "sendInitialEvents: Invalid value: must be true or false")
    # Without a resourceVersion (or with "0") a watch starts with the current state as ADDED events.
    initial = rv in (None, "0") if send_initial in (None, "") else send_initial == "true"

    check_field_selector(t.kind, q.get("fieldSelector"))
    initial_items: list[Obj] = []
    start_rv = rv
    try:
        if initial:
            initial_items, start_rv = store.list(t.kind, t.namespace, q.get("labelSelector"), q.get("fieldSelector"))
        watcher = store.watch(
            t.kind,
            t.namespace,
            start_rv,
            q.get("labelSelector"),
            q.get("fieldSelector"),
            bookmark_interval=settings["bookmark_interval"] if bookmarks else None,
        )
    except StoreError as e:
        if e.code not in (410, 504):
            raise
        # A too-old (or too-new) resourceVersion is reported in the stream, which is where clients look for it.
        response = _start(request)
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await response.write(_line("ERROR", e.status()))
            await response.write_eof()
        return response

    open_watches = request.app[OPEN_WATCHES_KEY]
    open_watches.add(watcher)
    response = _start(request)
    headers_sent = False

    def render(ev_type: str, obj: Obj) -> bytes:
        nonlocal headers_sent
        if as_table and ev_type in ("ADDED", "MODIFIED", "DELETED"):
            obj = tables.table(
                t.kind, [obj], obj["metadata"].get("resourceVersion", ""), include, headers=not headers_sent
            )
            headers_sent = True
        elif metadata_only and ev_type in ("ADDED", "MODIFIED", "DELETED"):
            obj = tables.partial(obj)
        return _line(ev_type, obj)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending: asyncio.Future[WatchEvent] | None = None
    try:
        await response.prepare(request)
        for obj in initial_items:
            await response.write(render("ADDED", obj))
        if send_initial == "true" and bookmarks:
            await response.write(
                _line(
                    "BOOKMARK",
                    {
                        "kind": t.kind.kind,
                        "apiVersion": t.kind.api_version,
                        "metadata": {"resourceVersion": start_rv, "annotations": {"k8s.io/initial-events-end": "true"}},
                    },
                )
            )
        events = watcher.__aiter__()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            # Wake up now and then to notice a client that went away while nothing happened.
            done, _ = await asyncio.wait({pending}, timeout=min(remaining, CLIENT_CHECK_SECONDS))
            if not done:
                if request.transport is None or request.transport.is_closing():
                    break
                continue
            finished, pending = pending, None
            try:
                event: WatchEvent = finished.result()
            except StopAsyncIteration:
                break
            if event.type == "BOOKMARK" and not bookmarks:
                continue
            if event.type in ("BOOKMARK", "ERROR"):
                await response.write(_line(event.type, event.object))
            else:
                await response.write(render(event.type, event.object))
            if event.type == "ERROR":
                break
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away (aiohttp's ClientConnectionResetError is a ConnectionResetError)
    finally:
        if pending is not None:
            pending.cancel()
        watcher.close()
        open_watches.discard(watcher)
    return response


def _start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    response.headers["Cache-Control"] = "no-cache, private"
    return response
