"""HTCondor: one job per pod running the shared runner (every container), status from the schedd.

Uses the HTCondor Python bindings (``htcondor2``, shipped by the ``htcondor`` wheel); their calls block, so
they run in a worker thread. The schedd is the local one unless ``htcondor.schedd_name`` names another.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..config import PluginConfig
from ..contract import Accelerator, PingResources, RetrievedPodData
from ..quantity import count, cpus, mebibytes, pod_resources
from ..runner import GPU_RESOURCES
from .base import GROUP_LABELS, USER_LABELS, Backend, BackendError, JobInfo, labelled

T = TypeVar("T")
PROJECTION = ["ClusterId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason", "RemoveReason"]


def _classad_str(value: str) -> str:
    return json.dumps(value)  # ClassAd string literals use the same escapes as JSON for these characters


def submit_description(cfg: PluginConfig, data: RetrievedPodData, job_dir: Path) -> str:
    """The submit description for a pod: resources, wall time and the runner that starts every container."""
    spec = data.pod.spec
    assert spec is not None
    meta = data.pod.metadata
    res = pod_resources(spec)
    lines: dict[str, str] = {
        "universe": "vanilla",
        "executable": str(job_dir / "job.sh"),
        "initialdir": str(job_dir),
        "output": str(job_dir / "job.out"),
        "error": str(job_dir / "job.err"),
        "log": str(job_dir / "job.log"),
        "batch_name": f"{meta.namespace}-{meta.name}",
        # The job dir is on the shared filesystem, like upstream's SHARED_FS mode.
        "should_transfer_files": "NO",
        "request_cpus": str(cpus(res["cpu"])) if "cpu" in res else "1",
        "request_memory": f"{mebibytes(res['memory'])}" if "memory" in res else "1024",
        "allowed_job_duration": str(spec.activeDeadlineSeconds or cfg.htcondor.default_wall_seconds),
    }
    gpus = sum(count(res[r], r) for r in GPU_RESOURCES if r in res)
    if gpus:
        lines["request_gpus"] = str(gpus)
    for resource, machine_name in cfg.htcondor.custom_resources.items():
        if resource in res and res[resource] > 0:
            lines[f"request_{machine_name}"] = str(count(res[resource], resource))
    lines.update(cfg.htcondor.extra_submit)
    lines["+InterLinkPodUID"] = _classad_str(meta.uid)
    lines["+InterLinkPod"] = _classad_str(f"{meta.namespace}/{meta.name}")
    lines["+InterLinkManaged"] = "true"
    # Whose job it is, for the facility's HTCondor history collector (after extra_submit: a site cannot unset it).
    user, group = labelled(meta.labels, USER_LABELS), labelled(meta.labels, GROUP_LABELS)
    lines["+AifacilityUser"] = _classad_str(user)
    lines["+AifacilityGroup"] = _classad_str(group)
    return "".join(f"{k} = {v}\n" for k, v in lines.items()) + "queue 1\n"


def job_info(ad: Mapping[str, Any]) -> JobInfo:
    """Map a schedd/history ClassAd to the plugin's job state."""
    status = int(ad.get("JobStatus", 0))
    if status == 1:
        return JobInfo("pending", "IDLE", "HTCondorIdle", "HTCondor: idle, waiting for a slot")
    if status == 5:
        return JobInfo("pending", "HELD", "HTCondorHeld", f"HTCondor: held: {ad.get('HoldReason', '')}")
    if status in (2, 6, 7):
        return JobInfo("running", {2: "RUNNING", 6: "TRANSFERRING_OUTPUT", 7: "SUSPENDED"}[status])
    if status == 3:
        why = str(ad.get("RemoveReason", ""))
        if "duration" in why.lower():
            return JobInfo("finished", "REMOVED", "DeadlineExceeded", f"HTCondor: {why}", 143)
        return JobInfo("finished", "REMOVED", "Cancelled", f"HTCondor: removed: {why}", 143)
    if status == 4:
        if ad.get("ExitBySignal"):
            sig = int(ad.get("ExitSignal", 9))
            return JobInfo("finished", "COMPLETED", "Error", f"killed by signal {sig}", 128 + sig)
        code = int(ad.get("ExitCode", 1))
        return JobInfo("finished", "COMPLETED", "Completed" if code == 0 else "Error", "", code)
    return JobInfo("pending", f"STATUS_{status}", "HTCondorUnknown", f"HTCondor JobStatus {status}")


class HTCondorBackend(Backend):
    name = "htcondor"

    def __init__(self, cfg: PluginConfig) -> None:
        import htcondor2  # imported here: the SLURM backend must not need the bindings

        self.htcondor = htcondor2
        self.cfg = cfg
        self.calls = 0
        self._schedd: Any = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        self.calls += 1
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except self.htcondor.HTCondorException as exc:
            raise BackendError(f"HTCondor: {exc}") from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise BackendError(f"HTCondor: {exc}") from exc

    def _get_schedd(self) -> Any:
        if self._schedd is None:
            h = self.htcondor
            if self.cfg.htcondor.schedd_name:
                coll = h.Collector(self.cfg.htcondor.collector) if self.cfg.htcondor.collector else h.Collector()
                self._schedd = h.Schedd(coll.locate(h.DaemonType.Schedd, self.cfg.htcondor.schedd_name))
            else:
                self._schedd = h.Schedd()
        return self._schedd

    def script_name(self) -> str:
        return "job.sub"

    def render(self, data: RetrievedPodData, job_dir: Path, body: str, script: Path) -> str:
        runner = job_dir / "job.sh"
        runner.write_text("#!/bin/bash\n" + body)
        runner.chmod(0o755)
        return submit_description(self.cfg, data, job_dir)

    async def submit(self, script: Path, job_dir: Path) -> str:
        def go() -> str:
            sub = self.htcondor.Submit(script.read_text())
            return str(self._get_schedd().submit(sub, count=1).cluster())

        try:
            return await self._call(go)
        except BackendError as exc:
            # the schedd may have queued the job before the error reached us: look it up on retry
            raise BackendError(str(exc), uncertain=True) from exc

    async def _ads(self, constraint: str) -> list[Any]:
        def go() -> list[Any]:
            schedd = self._get_schedd()
            ads = list(schedd.query(constraint=constraint, projection=PROJECTION))
            seen = {int(a["ClusterId"]) for a in ads}
            for a in schedd.history(constraint=constraint, projection=PROJECTION):
                if int(a["ClusterId"]) not in seen:
                    ads.append(a)
                    seen.add(int(a["ClusterId"]))
            return ads

        return await self._call(go)

    async def find(self, pod_uid: str) -> str | None:
        ads = await self._ads(f"InterLinkPodUID == {_classad_str(pod_uid)}")
        return str(max(int(a["ClusterId"]) for a in ads)) if ads else None

    async def query(self, jids: list[str]) -> dict[str, JobInfo]:
        if not jids:
            return {}
        ids = ", ".join(str(int(j)) for j in jids)
        ads = await self._ads(f"InterLinkManaged =?= true && member(ClusterId, {{{ids}}})")
        return {str(int(a["ClusterId"])): job_info(a) for a in ads}

    async def cancel(self, jids: list[str]) -> None:
        if jids:
            specs = [f"{int(j)}" for j in jids]
            await self._call(lambda: self._get_schedd().act(self.htcondor.JobAction.Remove, specs))

    async def capacity(self) -> PingResources:
        h = self.htcondor

        def go() -> list[Any]:
            coll = h.Collector(self.cfg.htcondor.collector) if self.cfg.htcondor.collector else h.Collector()
            return list(coll.query(h.AdType.Startd, constraint='SlotType =!= "Dynamic"',
                                   projection=["Cpus", "Memory", "GPUs"]))

        ads = await self._call(go)
        total_cpu = sum(int(a.get("Cpus", 0)) for a in ads)
        total_mem = sum(int(a.get("Memory", 0)) for a in ads)
        gpus = sum(int(a.get("GPUs", 0)) for a in ads)
        p = self.cfg.ping
        return PingResources(
            cpu=str(max(p.cpu_floor, total_cpu)),
            memory=f"{max(p.memory_floor_mib, total_mem)}Mi",
            pods=p.pods,
            accelerators=[Accelerator(resourceType="nvidia.com/gpu", available=gpus)] if gpus else [],
        )
