"""One interLink virtual node's kubelet loop over the real API: the node agent's `NodeKubelet` (registration,
lease, the pods bound to the node, status writes) with the interLink provider as its PodLifecycleHandler, and the
plugin's ping as the node's health.

Unlike a local node it does not authenticate as `system:node:<name>`: as interLink's virtual kubelet does with
its service account, it uses an identity of its own bound to the `interlink-virtual-kubelet` ClusterRole (see
`rbac.py`), since NodeRestriction forbids a node to change its own taints, and the virtual node must (the
not-ready taint while its plugin does not answer, and the taints the plugin asks for).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aifacility.embedded.kubeclient import MERGE, ApiError, KubeClient, follow
from aifacility.embedded.nodeagent.kubelet import NodeKubelet
from aifacility.embedded.nodeagent.provider import Pod, PodLifecycleHandler
from aifacility.embedded.virtualnode.node import not_ready, plugin_taints, ready, taint_patch
from aifacility.embedded.virtualnode.provider import JOB_ID, UNREACHABLE
from aifacility_interlink.client import PluginClient, PluginError

log = logging.getLogger(__name__)


class VirtualNodeKubelet(NodeKubelet):
    """`plugin`: the node's interLink plugin (None: none is configured, and the node says so, NotReady)."""

    def __init__(self, client: KubeClient, node: dict[str, Any], plugin: PluginClient | None, *,
                 ping_interval: float = 30.0) -> None:
        super().__init__(client, node)
        self.plugin = plugin
        self.ping_interval = ping_interval
        self.configured = dict(node["status"]["capacity"])  # the facility file's, when the ping says nothing
        self.is_ready = False
        if plugin is None:
            not_ready(node, "InterlinkNotConfigured",
                      "no interLink plugin is configured for this virtual node: set its interlink.url in the "
                      f"facility file or start the node agent with --interlink {self.name}=URL")
        else:
            not_ready(node, "InterlinkPingPending", f"waiting for the first answer of the interLink plugin at "
                      f"{plugin.url}")

    async def start(self, provider: PodLifecycleHandler | None) -> None:
        self.provider = provider
        await self.register()
        node = await self.client.get(f"/api/v1/nodes/{self.name}")
        if node is not None:
            self.node["metadata"]["uid"] = node["metadata"]["uid"]
        await self._taints(wanted=None)
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        if self.plugin is None or provider is None:
            return
        await self.ping()
        self._tasks.append(asyncio.create_task(self._ping_loop()))
        synced = asyncio.Event()
        self._tasks.append(asyncio.create_task(follow(self.client, "/api/v1/pods", self._on_pod, synced=synced,
                                                      fieldSelector=f"spec.nodeName={self.name}")))
        await synced.wait()

    def allocatable(self) -> dict[str, str]:
        """What the node offers now (the ping's answer; resource fields of the downward API read it)."""
        return dict(self.node["status"]["allocatable"])

    async def _delete(self, pod: Pod, *, started: bool) -> None:
        # A pod deleted while the agent was down still has its batch job: the provider cancels it by its JobID.
        has_job = bool((pod["metadata"].get("annotations") or {}).get(JOB_ID))
        await super()._delete(pod, started=started or has_job)

    # ---- the ping ------------------------------------------------------------------------------------------

    async def ping(self) -> bool:
        """One ping; the node's conditions, capacity and taints follow the answer."""
        assert self.plugin is not None
        url = self.plugin.url
        wanted: list[dict[str, str]] | None = None
        raw: str | None = None
        try:
            try:
                answer = await self.plugin.ping()
            except UNREACHABLE:
                # Once more on a fresh connection: a kept-alive one the plugin just closed is no outage.
                await asyncio.sleep(0.2)
                answer = await self.plugin.ping()
        except PluginError as e:
            not_ready(self.node, "InterlinkPingFailed",
                      f"the interLink plugin at {url} answered the ping with {e.status}: {e.message}")
        except UNREACHABLE as e:
            not_ready(self.node, "InterlinkPingFailed",
                      f"the interLink plugin at {url} cannot be reached: {e or type(e).__name__}")
        except ValueError as e:  # not a PingResponse
            not_ready(self.node, "InterlinkPingFailed",
                      f"the interLink plugin at {url} answered the ping with something unreadable: {e}")
        else:
            ready(self.node, answer, self.configured)
            wanted, raw = plugin_taints(answer), answer.model_dump_json()
        was, self.is_ready = self.is_ready, wanted is not None
        if self.is_ready != was:
            log.info("virtual node %s: %s", self.name, "Ready" if self.is_ready else "NotReady")
        await self._post_status()
        await self._taints(wanted=wanted, raw=raw)
        return self.is_ready

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.ping()
            except Exception as e:  # the API server may be restarting: the next ping writes it again
                log.info("virtual node %s: node status not written: %s", self.name, e)

    async def _taints(self, wanted: list[dict[str, str]] | None, raw: str | None = None) -> None:
        """The not-ready taint while not Ready, and the plugin's taints; retried on a concurrent write (the node
        lifecycle controller writes taints too)."""
        path = f"/api/v1/nodes/{self.name}"
        for _ in range(5):
            node = await self.client.get(path)
            if node is None:
                return
            patch = taint_patch(node, self.is_ready, wanted, raw)
            if patch is None:
                return
            try:
                await self.client.patch(path, patch, MERGE)
                return
            except ApiError as e:
                if e.status != 409:
                    raise
