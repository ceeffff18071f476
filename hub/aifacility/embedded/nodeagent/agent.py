"""The node agent: a kubelet of processes for every local node of the facility file, the facility's interLink
virtual nodes, and the volume provisioner.

    agent = NodeAgent(facility, state_dir, plane)   # plane: the ControlPlane (credentials, addresses)
    await agent.start(); ...; await agent.stop()

Each local node registers itself with the capacity, labels and taints the facility file gives it (GPUs, MIG
slices and FPGAs as the device plugins advertise them), renews its Lease, runs the pods the scheduler binds to
it as sandboxed processes (`local.LocalProcessProvider`) and serves its kubelet endpoint for `kubectl logs`.
Each virtual node (`interlink` in the facility file) runs its pods through its interLink plugin
(`embedded/virtualnode/`): `interlink` maps a virtual node to its plugin's URL (else the facility file's), and
`plugin_token` is the plugins' bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aifacility.embedded.controlplane.plane import APISERVER_KUBELET_CLIENT, ControlPlane
from aifacility.embedded.kubeclient import KubeClient
from aifacility.embedded.nodeagent.cpugroup import PodCpuGroup
from aifacility.embedded.nodeagent.cpugroup import describe as describe_cpu
from aifacility.embedded.nodeagent.devices import DeviceManager
from aifacility.embedded.nodeagent.events import EventRecorder
from aifacility.embedded.nodeagent.gpumetrics import GpuMetricsServer, Holder, holders_of
from aifacility.embedded.nodeagent.hostgpus import (
    HOST_GPUS_LABEL,
    HostDevice,
    HostGPU,
    discover,
    ensure_uvm,
    host_node,
)
from aifacility.embedded.nodeagent.ipam import PodIPs
from aifacility.embedded.nodeagent.kubelet import NodeKubelet
from aifacility.embedded.nodeagent.local import LocalProcessProvider
from aifacility.embedded.nodeagent.podnet import PodNetwork
from aifacility.embedded.nodeagent.provisioner import PROVISIONER_USER, VolumeProvisioner
from aifacility.embedded.nodeagent.registration import is_virtual, node_ip, node_object
from aifacility.embedded.nodeagent.runner import NodeContext
from aifacility.embedded.nodeagent.server import KubeletServer
from aifacility.embedded.virtualnode.controller import VirtualNodes, plugin_urls
from aifacility.facility.model import Facility, Node

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(self, facility: Facility, state_dir: Path, plane: ControlPlane, *, backoff_base: float = 1.0,
                 interlink: Mapping[str, str] | None = None, plugin_token: str | None = None,
                 ping_interval: float = 30.0, status_interval: float = 5.0,
                 gpu_metrics_port: int | None = None) -> None:
        self.facility = facility
        self.state_dir = Path(state_dir).resolve()
        self.plane = plane
        self.backoff_base = backoff_base
        self.kubelets: dict[str, NodeKubelet] = {}
        self.providers: dict[str, LocalProcessProvider] = {}
        self.servers: list[KubeletServer] = []
        self.clients: list[KubeClient] = []
        self.provisioner: VolumeProvisioner | None = None
        self.network: PodNetwork | None = None
        # This machine's GPUs (the node `--host-gpus` added), and where their figures are served (gpumetrics.py).
        self.host_gpus: list[HostGPU] = []
        self.gpu_metrics_port = gpu_metrics_port
        self.gpu_metrics: GpuMetricsServer | None = None
        self._plugin_urls = plugin_urls(facility, interlink or {})
        # ValueError here (a node that is not virtual, a bad URL) before anything starts.
        self.virtual = VirtualNodes(facility, self.state_dir, plane, interlink, token=plugin_token,
                                    ping_interval=ping_interval, status_interval=status_interval)

    def _client(self, kubeconfig: Path) -> KubeClient:
        client = KubeClient(kubeconfig)
        self.clients.append(client)
        return client

    async def start(self) -> None:
        plane = self.plane
        self.network = network = await PodNetwork.open(self.state_dir)
        if not network.isolated:
            print(f"node agent: WARNING: no network namespace per pod on this machine ({network.reason}); pods "
                  "share the host's loopback network, so the pods of one user only run here", flush=True)
        cpu = PodCpuGroup.open()
        print(f"node agent: {describe_cpu(cpu)}", flush=True)
        ips = PodIPs(network.network, skip=1 if network.isolated else 0)
        api_host, api_port = "127.0.0.1", plane.ports.apiserver
        provisioner_config = plane.component_kubeconfig("volume-provisioner", PROVISIONER_USER)
        self.provisioner = VolumeProvisioner(self._client(provisioner_config), self.state_dir)
        await self.provisioner.start()
        for index, node in enumerate(self.facility.nodes):
            if is_virtual(node):
                continue
            obj = node_object(self.facility, node, index, self.state_dir, plane.ports.kubelet)
            client = self._client(plane.node_kubeconfig(node.name))
            kubelet = NodeKubelet(client, obj)
            allocatable = dict(obj["status"]["allocatable"])
            ip = node_ip(obj)
            ctx = NodeContext(
                name=node.name, ip=ip, allocatable=allocatable, state_dir=self.state_dir,
                lookup=kubelet.lookup, notify=kubelet.notify, events=EventRecorder(client, "kubelet", node.name),
                api_host=api_host, api_port=api_port, token=kubelet.token, backoff_base=self.backoff_base,
                network=network, internal_ports=self.internal_ports(), cpu=cpu,
                devices=DeviceManager(node.name, allocatable, self.host_devices(node)),
                images={i.image: (list(i.entrypoint), list(i.cmd)) for i in self.facility.images})
            provider = LocalProcessProvider(ctx, ips)
            self.kubelets[node.name] = kubelet
            self.providers[node.name] = provider
            serving = plane.kubelet_serving(node.name, ip)
            server = KubeletServer(ip, kubelet.pod, self.state_dir, serving.cert, serving.key, plane.ca,
                                   APISERVER_KUBELET_CLIENT, port=plane.ports.kubelet)
            await server.start()
            self.servers.append(server)
            await kubelet.start(provider)
            for pod in kubelet.pods.values():  # addresses handed out before a restart stay the pods'
                pod_ip = (pod.get("status") or {}).get("podIP")
                if pod_ip:
                    ips.reserve(pod["metadata"]["uid"], pod_ip)
            if HOST_GPUS_LABEL in node.labels and self.gpu_metrics_port and ctx.devices is not None:
                await self._serve_gpu_metrics(node.name, kubelet, ctx.devices)
        await self.virtual.start()

    async def _serve_gpu_metrics(self, name: str, kubelet: NodeKubelet, devices: DeviceManager) -> None:
        import pynvml  # present: discovery read the GPUs through it (else through nvidia-smi: no figures)

        def holders() -> dict[str, list[Holder]]:
            return holders_of(kubelet.pods.values(), devices.holders())

        assert self.gpu_metrics_port is not None
        server = GpuMetricsServer(pynvml, self.host_gpus, name, holders, self.gpu_metrics_port)
        try:
            await server.start()
        except pynvml.NVMLError as e:
            print(f"node agent: {name}: no GPU figures (NVML: {e}); usage keeps the models' power figures", flush=True)
            return
        self.gpu_metrics = server
        print(f"node agent: {name}: GPU figures for Prometheus and accounting at "
              f"http://127.0.0.1:{self.gpu_metrics_port}/metrics", flush=True)

    def host_devices(self, node: Node) -> dict[str, list[HostDevice]] | None:
        """This machine's real GPUs for the node `aifacility up --host-gpus` added (found again: same machine)."""
        replicas = node.labels.get(HOST_GPUS_LABEL)
        if replicas is None:
            return None
        self.host_gpus = discover()
        served = host_node(self.facility, self.host_gpus, name=node.name, replicas=int(replicas))
        print(f"node agent: {node.name}: the machine's GPUs: {served.node.accelerators}", flush=True)
        if self.host_gpus and (problem := ensure_uvm()):
            print(f"node agent: {node.name}: {problem}", flush=True)
        return served.devices

    async def stop(self) -> None:
        await self.virtual.stop()
        if self.gpu_metrics is not None:
            await self.gpu_metrics.stop()
        await asyncio.gather(*(p.shutdown() for p in self.providers.values()), return_exceptions=True)
        await asyncio.gather(*(k.stop() for k in self.kubelets.values()), return_exceptions=True)
        if self.network is not None:
            await self.network.close()
        if self.provisioner is not None:
            await self.provisioner.stop()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.stop()
        for client in self.clients:
            await client.close()

    def internal_ports(self) -> frozenset[int]:
        """The cluster's own ports on loopback, which no pod may reach (the API server aside, as in a cluster)."""
        ports = {getattr(self.plane.ports, f.name) for f in dataclasses.fields(self.plane.ports)}
        ports.discard(self.plane.ports.apiserver)
        if self.gpu_metrics_port:
            ports.add(self.gpu_metrics_port)
        for url in self._plugin_urls.values():
            if url and not url.startswith("unix://"):
                port = urlsplit(url).port
                if port:
                    ports.add(port)
        return frozenset(ports)

    def pids(self) -> list[int]:
        return [pid for p in self.providers.values() for pid in p.pids()]

    def describe(self) -> dict[str, Any]:
        return {name: len(k.pods) for name, k in [*self.kubelets.items(), *self.virtual.kubelets.items()]}
