"""What device plugins hand a container, for the simulated nodes.

On a real node the kubelet asks the device plugin of each extended resource to *allocate* devices to a container
and gets back the environment (and device files) that make exactly those devices visible. The NVIDIA device
plugin answers with `NVIDIA_VISIBLE_DEVICES` = the UUIDs of the GPUs (`GPU-...`) or MIG instances (`MIG-...`).
Here each node's devices get stable UUIDs derived from the node and the resource, and a container keeps its
devices until its pod ends, so code in a notebook sees the same answer it would on the cluster. On a machine
with real GPUs (hostgpus.py) their resources are the real devices: the UUIDs NVML reports, CUDA_VISIBLE_DEVICES
as well, and the device files the container's sandbox binds (no pod sees another pod's devices).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aifacility.embedded.nodeagent.hostgpus import HostDevice
from aifacility.facility.quantity import parse_quantity

NVIDIA = "nvidia.com/"


def device_ids(node: str, resource: str, count: int) -> list[str]:
    prefix = "MIG" if resource.startswith(f"{NVIDIA}mig-") else "GPU" if resource.startswith(NVIDIA) else "DEV"
    return [f"{prefix}-{uuid.uuid5(uuid.NAMESPACE_URL, f'aifacility-devcluster:{node}:{resource}:{i}')}"
            for i in range(count)]


class DeviceManager:
    """The devices of one node's extended resources, and which container holds which."""

    def __init__(self, node: str, allocatable: Mapping[str, str],
                 host: Mapping[str, list[HostDevice]] | None = None) -> None:
        self.host = {d.id: d for units in (host or {}).values() for d in units}
        # On the machine's own GPUs only what was found is handed out: a resource the node was registered with
        # but the GPUs no longer have (a MIG layout changed since) gets no devices, never simulated ones.
        self.devices = {res: [d.id for d in (host or {}).get(res, [])] if host is not None else
                        device_ids(node, res, int(parse_quantity(qty)))
                        for res, qty in allocatable.items() if "/" in res}
        self.held: dict[tuple[str, str], dict[str, list[str]]] = {}

    def allocate(self, pod_uid: str, container: Mapping[str, Any]) -> dict[str, str]:
        """Devices for a container (the same ones on every restart of it) and the environment that shows them."""
        key = (pod_uid, str(container.get("name")))
        if key not in self.held:
            res = container.get("resources") or {}
            wanted = {**(res.get("limits") or {}), **(res.get("requests") or {})}
            taken = {d for grant in self.held.values() for ids in grant.values() for d in ids}
            grant: dict[str, list[str]] = {}
            for resource, qty in wanted.items():
                if resource in self.devices:
                    free = [d for d in self.devices[resource] if d not in taken]
                    grant[resource] = free[: int(parse_quantity(qty))]
            self.held[key] = grant
        nvidia = [d for res, ids in self.held[key].items() if res.startswith(NVIDIA) for d in ids]
        if self.host:
            # Real devices: their UUIDs (a time-sliced GPU's replicas share one), for CUDA as well.
            uuids = list(dict.fromkeys(self.host[d].uuid if d in self.host else d for d in nvidia))
            return {"NVIDIA_VISIBLE_DEVICES": ",".join(uuids) if uuids else "void",
                    "CUDA_VISIBLE_DEVICES": ",".join(uuids)}
        # Like the NVIDIA container toolkit: a container without GPUs sees none (not all of them).
        return {"NVIDIA_VISIBLE_DEVICES": ",".join(nvidia) if nvidia else "void"}

    def files(self, pod_uid: str, container: str) -> tuple[str, ...]:
        """The device files a container's sandbox binds: those of its real devices, none otherwise."""
        grant = self.held.get((pod_uid, container), {})
        found = [f for ids in grant.values() for d in ids if d in self.host for f in self.host[d].files]
        return tuple(dict.fromkeys(found))

    def holders(self) -> dict[str, list[tuple[str, str]]]:
        """Real device UUID -> the (pod uid, container)s holding it: several for a time-sliced GPU's replicas."""
        out: dict[str, list[tuple[str, str]]] = {}
        for key, grant in self.held.items():
            for ids in grant.values():
                for d in ids:
                    if d in self.host:
                        out.setdefault(self.host[d].uuid, []).append(key)
        return out

    def release(self, pod_uid: str) -> None:
        for key in [k for k in self.held if k[0] == pod_uid]:
            del self.held[key]
