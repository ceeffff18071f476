"""This machine's GPUs' figures under the DCGM exporter's names, for an embedded facility on a GPU server.

On a cluster the GPU operator runs NVIDIA's DCGM exporter on every GPU node: Prometheus scrapes it, Grafana's
DCGM dashboards read it, and the accounting collector takes each pod's GPU energy from it (accounting/dcgm.py).
DCGM itself cannot be had without NVIDIA's repositories, so on `aifacility up --host-gpus` the node agent serves
the same series from NVML, which it reads anyway: utilisation, power, the energy counter and memory used of each
whole GPU, labelled as the exporter labels them (`gpu`, `UUID`, `device`, `modelName`, `Hostname`) and, with the
exporter's Kubernetes mapping, with the `namespace`, `pod` and `container` that hold the GPU.

A GPU whose energy cannot be one pod's carries no pod labels: a time-sliced GPU held by several pods, and a GPU in
MIG mode (NVML, like DCGM, measures the whole GPU, not a slice). Their pods' records keep the estimate from the
model's power figure. The endpoint listens on loopback only, and no pod may reach it (agent.internal_ports): it
names every tenant's pods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aifacility.embedded.nodeagent.hostgpus import HostGPU

# (name, type, help) as the DCGM exporter publishes them, in its units.
UTIL = ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).")
POWER = ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).")
ENERGY = ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ).")
FB_USED = ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).")


@dataclass(frozen=True)
class Holder:
    namespace: str
    pod: str
    container: str


@dataclass(frozen=True)
class Reading:
    """One whole GPU's figures; None where NVML does not report it (e.g. energy before Volta)."""

    gpu: HostGPU
    utilization_percent: float | None
    power_watts: float | None
    energy_millijoules: float | None
    memory_used_mib: float | None


def _maybe(nvml: Any, call: Callable[[Any], Any], handle: Any, field: str | None = None) -> Any:
    try:
        value = call(handle)
        return getattr(value, field) if field else value
    except nvml.NVMLError:  # NotSupported, NoPermission, GpuIsLost: that figure is left out
        return None


def read(nvml: Any, gpus: Iterable[HostGPU]) -> list[Reading]:
    """The figures of `gpus` now (NVML initialised by the caller). Utilisation is absent for a GPU in MIG mode:
    NVML does not report it there."""
    out = []
    for gpu in gpus:
        h = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
        util = None if gpu.mig_enabled else _maybe(nvml, nvml.nvmlDeviceGetUtilizationRates, h, "gpu")
        power = _maybe(nvml, nvml.nvmlDeviceGetPowerUsage, h)  # mW
        energy = _maybe(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, h)  # mJ
        memory = _maybe(nvml, nvml.nvmlDeviceGetMemoryInfo, h, "used")  # bytes
        out.append(Reading(gpu, None if util is None else float(util), None if power is None else power / 1000,
                           None if energy is None else float(energy), None if memory is None else memory / 2**20))
    return out


def _labels(pairs: Mapping[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs.items()) + "}"


def holders_of(pods: Iterable[Mapping[str, Any]], held: Mapping[str, list[tuple[str, str]]]) -> dict[str, list[Holder]]:
    """GPU UUID -> the containers holding it, from the device manager's (pod uid, container) pairs and the
    node's pods (a pod already gone from the node holds nothing)."""
    meta = {p["metadata"]["uid"]: p["metadata"] for p in pods}
    return {uuid: [Holder(meta[uid]["namespace"], meta[uid]["name"], container) for uid, container in pairs
                   if uid in meta] for uuid, pairs in held.items()}


def render(hostname: str, readings: Iterable[Reading], holders: Mapping[str, list[Holder]]) -> str:
    """The exporter's text for `readings`; `holders`: GPU UUID -> the containers holding that whole GPU."""
    readings = list(readings)
    lines: list[str] = []
    for (name, kind, text), field in ((UTIL, "utilization_percent"), (POWER, "power_watts"),
                                      (ENERGY, "energy_millijoules"), (FB_USED, "memory_used_mib")):
        samples = [(r, getattr(r, field)) for r in readings if getattr(r, field) is not None]
        if not samples:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for r, value in samples:
            labels = {"gpu": str(r.gpu.index), "UUID": r.gpu.uuid, "device": f"nvidia{r.gpu.minor}",
                      "modelName": r.gpu.model, "Hostname": hostname}
            held = holders.get(r.gpu.uuid, [])
            if len(held) == 1 and not r.gpu.mig_enabled:  # one pod's GPU: its energy is that pod's
                labels.update(container=held[0].container, namespace=held[0].namespace, pod=held[0].pod)
            lines.append(f"{name}{_labels(labels)} {float(value)!r}")  # full precision: counters grow large
    return "\n".join(lines) + "\n"


class GpuMetricsServer:
    """`GET /metrics` on 127.0.0.1:`port`: the GPUs read through NVML at each scrape, labelled with the pods
    that `holders()` says hold them."""

    def __init__(self, nvml: Any, gpus: list[HostGPU], hostname: str, holders: Callable[[], dict[str, list[Holder]]],
                 port: int, host: str = "127.0.0.1") -> None:
        self.nvml, self.gpus, self.hostname, self.holders = nvml, gpus, hostname, holders
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()  # one NVML read at a time

    async def metrics(self, request: web.Request) -> web.Response:
        async with self._lock:
            try:
                readings = await asyncio.to_thread(read, self.nvml, self.gpus)
            except self.nvml.NVMLError as e:  # the driver went away: say so, as an exporter would fail its scrape
                return web.Response(status=503, text=f"NVML could not be read: {e}\n")
        return web.Response(text=render(self.hostname, readings, self.holders()),
                            content_type="text/plain", charset="utf-8")

    async def start(self) -> None:
        self.nvml.nvmlInit()
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()
