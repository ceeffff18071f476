"""The interLink virtual nodes of the development cluster: one provider, log provider and ping per node.

`prepare` runs at cluster start before the API and the scheduler (a DevCluster plugin): every virtual node is
NotReady until its plugin first answers, and a node without a plugin says so in its conditions. `start` (a
controller, after the node agent) registers the providers and starts the ping and status loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.events import EventRecorder
from aifacility.devcluster.nodes import is_virtual, node_ip
from aifacility.devcluster.virtualnode.logs import InterLinkLogProvider
from aifacility.devcluster.virtualnode.node import mark_not_ready, mark_ready
from aifacility.devcluster.virtualnode.provider import JOB_ID, UNREACHABLE, InterLinkProvider
from aifacility.facility.model import Facility
from aifacility_interlink.client import PluginClient, PluginError, token_from_env

log = logging.getLogger(__name__)

URL_SCHEMES = ("http://", "https://", "unix://")


def plugin_urls(facility: Facility, overrides: Mapping[str, str]) -> dict[str, str | None]:
    """Each virtual node's plugin URL (`overrides` win over the facility file); ValueError names a bad one."""
    virtual = {n.name: n for n in facility.nodes if is_virtual(n)}
    for name, given in overrides.items():
        if name not in virtual:
            choices = ", ".join(sorted(virtual)) or "none in this facility file"
            raise ValueError(f"--interlink {name}={given}: {name} is not an interLink virtual node "
                             f"(virtual nodes: {choices})")
    out: dict[str, str | None] = {}
    for name, node in virtual.items():
        url: str | None = overrides.get(name) or (node.interlink.url if node.interlink else None)
        if url is not None and not url.startswith(URL_SCHEMES):
            raise ValueError(f"the interLink plugin URL of {name}, {url!r}, must start with http://, https:// "
                             "or unix://")
        out[name] = url
    return out


class VirtualNodes:
    """Controller for every virtual node of the facility; timing is configurable (tests ping often)."""

    def __init__(self, facility: Facility, urls: Mapping[str, str] | None = None, *, token: str | None = None,
                 ping_interval: float = 30.0, status_interval: float = 5.0, retry_base: float = 1.0,
                 retry_max: float = 30.0) -> None:
        self.urls = plugin_urls(facility, urls or {})
        self.token = token if token is not None else token_from_env()  # `aifacility up` names the token file
        self.ping_interval = ping_interval
        self.status_interval = status_interval
        self.retry = (retry_base, retry_max)
        self.providers: dict[str, InterLinkProvider] = {}
        self._configured: dict[str, dict[str, str]] = {}  # node -> capacity from the facility file
        self._orphans: list[tuple[str, dict[str, Any]]] = []
        self._tasks: list[asyncio.Task[Any]] = []

    # ---- DevCluster plugin: before the API and the controllers -----------------------------------------------

    def prepare(self, cluster: Any) -> None:
        from aifacility.devcluster.cluster import TOKEN  # the token projected service-account volumes carry

        store = cluster.store
        events = EventRecorder(store, "virtual-kubelet")
        for name, url in self.urls.items():
            node = store.get(kinds.NODE, None, name)
            self._configured[name] = dict((node.get("status") or {}).get("capacity") or {})
            if url is None:
                if cluster.agent.provider(name) is None:  # else another plugin serves it
                    # Not tainted: its pods are bound and wait, and start as soon as a provider is registered.
                    mark_not_ready(store, name, "InterlinkNotConfigured",
                                   "no interLink plugin is configured for this virtual node: set its interlink.url "
                                   f"in the facility file or start the development cluster with --interlink "
                                   f"{name}=URL", taint=False)
                continue
            mark_not_ready(store, name, "InterlinkPingPending",
                           f"waiting for the first answer of the interLink plugin at {url}")
            provider = InterLinkProvider(
                name, PluginClient(url, self.token, timeout=30.0), store, events, host_ip=node_ip(node),
                allocatable=self._allocatable(store, name), token=TOKEN, status_interval=self.status_interval,
                retry_base=self.retry[0], retry_max=self.retry[1])
            self.providers[name] = provider
            cluster.logs.register(name, InterLinkLogProvider(url, self.token))
            # Pods deleted while the cluster was down: the node agent removes them without asking a provider,
            # so their batch jobs are cancelled here.
            pods, _ = store.list(kinds.POD, field_selector=f"spec.nodeName={name}")
            for pod in pods:
                meta = pod["metadata"]
                if meta.get("deletionTimestamp") and (meta.get("annotations") or {}).get(JOB_ID):
                    self._orphans.append((name, pod))

    @staticmethod
    def _allocatable(store: Any, name: str) -> Any:
        def get() -> dict[str, str]:
            return dict((store.get(kinds.NODE, None, name).get("status") or {}).get("allocatable") or {})
        return get

    # ---- controller --------------------------------------------------------------------------------------------

    async def start(self, cluster: Any) -> None:
        for name, provider in self.providers.items():
            self._tasks.append(asyncio.create_task(self._ping_loop(cluster.store, name, provider)))
            cluster.agent.register_provider(name, provider)
            provider.start()
        for name, pod in self._orphans:
            self._tasks.append(asyncio.create_task(self.providers[name].cancel_job(pod)))
        self._orphans.clear()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for provider in self.providers.values():
            await provider.shutdown()
            with contextlib.suppress(Exception):
                await provider.client.close()

    async def ping(self, store: Any, name: str, provider: InterLinkProvider) -> bool:
        """One ping; the node's conditions, taints and capacity follow the answer."""
        url = provider.client.url
        try:
            answer = await provider.client.ping()
        except PluginError as e:
            mark_not_ready(store, name, "InterlinkPingFailed",
                           f"the interLink plugin at {url} answered the ping with {e.status}: {e.message}")
            return False
        except UNREACHABLE as e:
            mark_not_ready(store, name, "InterlinkPingFailed",
                           f"the interLink plugin at {url} cannot be reached: {e or type(e).__name__}")
            return False
        except ValueError as e:  # not a PingResponse
            mark_not_ready(store, name, "InterlinkPingFailed",
                           f"the interLink plugin at {url} answered the ping with something unreadable: {e}")
            return False
        mark_ready(store, name, answer, self._configured.get(name, {}), answer.model_dump_json())
        return True

    async def _ping_loop(self, store: Any, name: str, provider: InterLinkProvider) -> None:
        while True:
            try:
                await self.ping(store, name, provider)
            except Exception:
                log.exception("pinging the interLink plugin of %s failed", name)
            await asyncio.sleep(self.ping_interval)
