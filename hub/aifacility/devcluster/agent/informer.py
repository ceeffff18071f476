"""List-then-watch loops for the in-process controllers (the shape of a client-go informer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aifacility.devcluster.kinds import Kind
from aifacility.devcluster.store import Gone, Store

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]


async def follow(store: Store, kind: Kind, handler: Handler, *, synced: asyncio.Event | None = None) -> None:
    """Call handler(event type, object) for every existing object (as ADDED), then for every change.

    A watch that falls too far behind (410 Gone) is restarted with a fresh list, as client-go does; the
    handler must therefore be idempotent, which every controller here is (they reconcile, not replay).
    """
    while True:
        items, rv = store.list(kind)
        for item in items:
            _call(handler, kind, "ADDED", item)
        if synced is not None:
            synced.set()
        try:
            watcher = store.watch(kind, resource_version=rv)
        except Gone:
            continue
        try:
            async for event in watcher:
                if event.type == "BOOKMARK":
                    continue
                if event.type == "ERROR":
                    break  # cut off (410): list again
                _call(handler, kind, event.type, event.object)
            else:
                # The watcher ended without an error (store closed): stop following.
                return
        finally:
            watcher.close()


def _call(handler: Handler, kind: Kind, event: str, obj: dict[str, Any]) -> None:
    """One bad object must not stop a controller from seeing all the others."""
    try:
        handler(event, obj)
    except Exception:
        log.exception("handler for %s %s failed", kind.plural, event)


class Trigger:
    """A coalescing wake-up: many `fire()` calls between two rounds cause one round."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()

    async def wait(self, max_seconds: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max_seconds)
        fired = self._event.is_set()
        self._event.clear()
        return fired


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    tasks.clear()
