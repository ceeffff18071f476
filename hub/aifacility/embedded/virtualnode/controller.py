"""The facility's interLink virtual nodes, run inside the node agent: per node a kubelet loop of its own
identity, the interLink provider, the plugin ping, and the kubelet endpoint on the node's InternalIP that the
API server calls for `kubectl logs` (answered from the plugin's `/getLogs`).

    nodes = VirtualNodes(facility, state_dir, plane, urls={"vk-hpc-leonardo": "http://127.0.0.1:4000"})
    await nodes.start(); ...; await nodes.stop()

A virtual node without a plugin URL (neither in the facility file nor given) is registered NotReady, its
conditions saying how to configure one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

from aifacility.embedded.controlplane.plane import APISERVER_KUBELET_CLIENT, ControlPlane
from aifacility.embedded.kubeclient import KubeClient
from aifacility.embedded.nodeagent.events import EventRecorder
from aifacility.embedded.nodeagent.registration import is_virtual, node_ip, node_object
from aifacility.embedded.nodeagent.server import KubeletServer
from aifacility.embedded.virtualnode.kubelet import VirtualNodeKubelet
from aifacility.embedded.virtualnode.logs import InterLinkLogProvider
from aifacility.embedded.virtualnode.provider import InterLinkProvider
from aifacility.embedded.virtualnode.rbac import GROUP, user
from aifacility.facility.model import Facility
from aifacility_interlink.client import PluginClient

log = logging.getLogger(__name__)

URL_SCHEMES = ("http://", "https://", "unix://")


def parse_interlink_options(values: list[str]) -> dict[str, str]:
    """`--interlink NODE=URL` options as {node: url}; ValueError says which one is malformed."""
    out: dict[str, str] = {}
    for value in values:
        node, sep, url = value.partition("=")
        if not sep or not node or not url:
            raise ValueError(f"--interlink {value}: expected NODE=URL, e.g. --interlink "
                             "vk-hpc-leonardo=http://127.0.0.1:4000")
        if node in out:
            raise ValueError(f"--interlink {value}: {node} is given twice")
        out[node] = url
    return out


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
    """Every virtual node of the facility; timing is configurable (tests ping often)."""

    def __init__(self, facility: Facility, state_dir: Path, plane: ControlPlane,
                 urls: Mapping[str, str] | None = None, *, token: str | None = None, ping_interval: float = 30.0,
                 status_interval: float = 5.0, retry_base: float = 1.0, retry_max: float = 30.0) -> None:
        self.facility = facility
        self.state_dir = Path(state_dir).resolve()
        self.plane = plane
        self.urls = plugin_urls(facility, urls or {})
        self.token = token
        self.ping_interval = ping_interval
        self.status_interval = status_interval
        self.retry = (retry_base, retry_max)
        self.kubelets: dict[str, VirtualNodeKubelet] = {}
        self.providers: dict[str, InterLinkProvider] = {}
        self.servers: list[KubeletServer] = []
        self.clients: list[KubeClient] = []

    def kubeconfig(self, node: str) -> Path:
        return self.plane.component_kubeconfig(f"virtual-kubelet-{node}", user(node), (GROUP,))

    async def start(self) -> None:
        for index, node in enumerate(self.facility.nodes):
            if not is_virtual(node):
                continue
            url = self.urls[node.name]
            obj = node_object(self.facility, node, index, self.state_dir, self.plane.ports.kubelet)
            client = KubeClient(self.kubeconfig(node.name), user_agent="aifacility-virtual-kubelet")
            self.clients.append(client)
            plugin = PluginClient(url, self.token, timeout=30.0) if url else None
            kubelet = VirtualNodeKubelet(client, obj, plugin, ping_interval=self.ping_interval)
            self.kubelets[node.name] = kubelet
            provider: InterLinkProvider | None = None
            if url is not None and plugin is not None:
                ip = node_ip(obj)
                provider = InterLinkProvider(
                    node.name, PluginClient(url, self.token, timeout=30.0), client,
                    EventRecorder(client, "virtual-kubelet", node.name), notify=kubelet.notify,
                    lookup=kubelet.lookup, token=kubelet.token, host_ip=ip,
                    allocatable=kubelet.allocatable,
                    status_interval=self.status_interval, retry_base=self.retry[0], retry_max=self.retry[1])
                self.providers[node.name] = provider
                serving = self.plane.kubelet_serving(node.name, ip)
                server = KubeletServer(ip, kubelet.pod, self.state_dir, serving.cert, serving.key, self.plane.ca,
                                       APISERVER_KUBELET_CLIENT, logs=InterLinkLogProvider(url, self.token),
                                       port=self.plane.ports.kubelet)
                await server.start()
                self.servers.append(server)
            await kubelet.start(provider)
            if provider is not None:
                provider.start()
            log.info("virtual node %s: plugin %s", node.name, url or "(none configured)")

    async def stop(self) -> None:
        await asyncio.gather(*(p.shutdown() for p in self.providers.values()), return_exceptions=True)
        await asyncio.gather(*(k.stop() for k in self.kubelets.values()), return_exceptions=True)
        for kubelet in self.kubelets.values():
            if kubelet.plugin is not None:
                with contextlib.suppress(Exception):
                    await kubelet.plugin.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.stop()
        for client in self.clients:
            await client.close()
