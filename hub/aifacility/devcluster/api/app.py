"""make_app: the aiohttp application serving the Kubernetes REST protocol over a Store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from .. import kinds
from ..logs import LOG_REGISTRY_KEY, LogRegistry
from ..store import NotFound, Store
from . import discovery, openapi
from .errors import status_middleware
from .eventsv1 import ApiStore
from .handlers import dispatch
from .state import API_GROUPS_KEY, API_STORE_KEY, OPEN_WATCHES_KEY, SETTINGS_KEY, STORE_KEY
from .validation import admission_hook

Extension = Callable[[web.Application], None]


def register_api_group(app: web.Application, group: str, version: str, resources: list[dict[str, Any]]) -> None:
    """Declare an extra group-version (served by an extension's own routes) in discovery."""
    app[API_GROUPS_KEY].setdefault((group, version), []).extend(resources)


def make_app(
    store: Store,
    *,
    logs: LogRegistry | None = None,
    extensions: Iterable[Extension] = (),
    bookmark_interval: float = 30.0,
) -> web.Application:
    app = web.Application(middlewares=[status_middleware], client_max_size=3 * 1024 * 1024)
    app[STORE_KEY] = store
    app[API_STORE_KEY] = ApiStore(store)
    app[API_GROUPS_KEY] = {}
    app[SETTINGS_KEY] = {"bookmark_interval": bookmark_interval}
    app[OPEN_WATCHES_KEY] = set()
    app.on_shutdown.append(_end_watches)
    if logs is None:
        logs = LogRegistry(store.state_dir)
    if logs.pod_getter is None:
        logs.pod_getter = lambda ns, name: _pod_or_none(store, ns, name)
    app[LOG_REGISTRY_KEY] = logs
    # Defaulting and validation are the API server's, but controllers writing straight to the store get them too.
    if admission_hook not in store.hooks:
        store.add_hook(admission_hook)
    discovery.add_routes(app)
    openapi.add_routes(app)
    # Extensions first: their routes (e.g. /apis/visibility.kueue.x-k8s.io/...) must win over the catch-all below.
    for extension in extensions:
        extension(app)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        app.router.add_route(method, "/api/{version:v1}/{tail:.+}", dispatch)
        app.router.add_route(method, "/apis/{group}/{version}/{tail:.+}", dispatch)
    return app


async def _end_watches(app: web.Application) -> None:
    """Shutting down: end every watch stream cleanly (clients re-watch), instead of waiting for their timeouts."""
    watches: set[Any] = app[OPEN_WATCHES_KEY]
    for watcher in list(watches):
        watcher.close()


def _pod_or_none(store: Store, namespace: str, name: str) -> dict | None:
    try:
        return store.get(kinds.POD, namespace, name)
    except NotFound:
        return None
