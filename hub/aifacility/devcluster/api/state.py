"""Keys of what the API application carries (typed aiohttp AppKeys)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..store import Store
from .eventsv1 import ApiStore

STORE_KEY: web.AppKey[Store] = web.AppKey("devcluster_store", Store)
# What the handlers use: the store with events.k8s.io/v1 Events served as a view of the core Events.
API_STORE_KEY: web.AppKey[ApiStore] = web.AppKey("devcluster_api_store", ApiStore)
# (group, version) -> APIResource entries added by extensions (e.g. the Kueue visibility API)
API_GROUPS_KEY: web.AppKey[dict[tuple[str, str], list[dict[str, Any]]]] = web.AppKey("devcluster_api_groups", dict)
SETTINGS_KEY: web.AppKey[dict[str, Any]] = web.AppKey("devcluster_api_settings", dict)
# Watches being served, closed on shutdown so that a stopping server does not wait for them to time out.
OPEN_WATCHES_KEY: web.AppKey[set[Any]] = web.AppKey("devcluster_open_watches", set)
