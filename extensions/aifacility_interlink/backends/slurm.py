"""SLURM: one batch job per pod, `#SBATCH` flags merged from flavor, annotation and limits; one squeue per poll."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

from ..config import PluginConfig
from ..contract import Accelerator, PingResources, RetrievedPodData
from ..quantity import count, cpus, mebibytes, pod_resources
from ..volumes import PodError
from .base import GROUP_LABELS, USER_LABELS, Backend, BackendError, JobInfo, labelled

FLAGS_ANNOTATION = "slurm-job.vk.io/flags"
FLAVOR_ANNOTATION = "slurm-job.vk.io/flavor"
# Options that would change what a pod's job is, whoever sets them: one script, one job, an id to parse.
_STRUCTURAL = {
    "--parsable": "the plugin reads the job id itself",
    "--wrap": "the job runs the pod's generated script",
    "--array": "a pod is one job (use an Indexed Job for many)",
}
_SHORT = {"-p": "--partition", "-t": "--time", "-c": "--cpus-per-task", "-n": "--ntasks", "-N": "--nodes",
          "-G": "--gpus", "-J": "--job-name", "-o": "--output", "-e": "--error", "-D": "--chdir", "-i": "--input",
          "-A": "--account", "-q": "--qos", "-C": "--constraint", "-w": "--nodelist"}
_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESIZING", "SUSPENDED"}
# How a finished job ended, as a Kubernetes-style reason and the exit code to use for containers that
# left no exit-status file (killed before they could write one).
_ENDED = {
    "COMPLETED": ("Completed", 0), "FAILED": ("Error", 1), "CANCELLED": ("Cancelled", 143),
    "TIMEOUT": ("SlurmJobTimeout", 143), "DEADLINE": ("DeadlineExceeded", 143),
    "OUT_OF_MEMORY": ("OOMKilled", 137), "NODE_FAIL": ("NodeFail", 1), "PREEMPTED": ("Preempted", 143),
    "BOOT_FAIL": ("BootFail", 1), "REVOKED": ("Revoked", 1),
}
_SUBMITTED = re.compile(r"^(\d+)(?:;\S+)?\s*$")


def _flag_key(flag: str) -> str:
    key = flag.split("=", 1)[0].split(" ", 1)[0]
    return _SHORT.get(key, key)


def flag_names(names: list[str]) -> set[str]:
    """Long option names of a site's lock list (`-o` → `--output`; a missing `--` is added)."""
    return {_SHORT.get(n, n if n.startswith("-") else f"--{n}") for n in names}


def parse_flags(text: str, what: str, locked: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """`--a=b --c d -p x` → ["--a=b", "--c d", "-p x"]; one entry per option, with its value.

    Options the site locks (`slurm.locked_flags`) are refused with a message that says so."""
    if "\n" in text or "\r" in text:
        raise PodError(f"{what}: flags must be on one line")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise PodError(f"{what}: cannot parse {text!r}: {exc}") from exc
    flags: list[str] = []
    for w in words:
        if w.startswith("-"):
            flags.append(w)
        elif flags and "=" not in flags[-1] and " " not in flags[-1]:
            flags[-1] = f"{flags[-1]} {w}"
        else:
            raise PodError(f"{what}: {w!r} is not an sbatch option (options start with '-')")
    for f in flags:
        key = _flag_key(f)
        if key in _STRUCTURAL:
            raise PodError(f"{what}: {key} cannot be used: {_STRUCTURAL[key]}")
        if key in locked:
            raise PodError(f"{what}: {key} is locked by this site (slurm.locked_flags in the plugin's "
                           "configuration); remove it from the annotation")
    return flags


def merge_flags(*groups: list[str]) -> list[str]:
    """Later groups win, per option name; order of first appearance is kept."""
    merged: dict[str, str] = {}
    for group in groups:
        for f in group:
            merged[_flag_key(f)] = f
    return list(merged.values())


def parse_gres(text: str) -> dict[str, int]:
    """`gpu:a100:4(S:0-1),fpga:1` → {"gpu": 4, "fpga": 1}."""
    out: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        parts = item.strip().split(":")
        if len(parts) >= 2 and parts[-1].isdigit():
            out[parts[0]] = out.get(parts[0], 0) + int(parts[-1])
    return out


def accounting_comment(labels: dict[str, str], uid: str) -> str:
    """`--comment=aifacility,user=<u>,group=<g>,pod=<uid>`: whose job this is, for the facility's sacct collector
    (slurmdbd keeps comments with `AccountingStoreFlags=job_comment`). From the labels the pod was created with, so
    a later change of membership does not move its usage; `--comment` is locked by default, so a pod cannot charge
    another user."""
    user, group = labelled(labels, USER_LABELS), labelled(labels, GROUP_LABELS)
    return f"--comment=aifacility,user={user},group={group},pod={uid}"


class SlurmBackend(Backend):
    name = "slurm"

    def __init__(self, cfg: PluginConfig) -> None:
        self.cfg = cfg
        self.s = cfg.slurm
        self.calls = 0

    async def _run(self, *argv: str, unknown_job_ok: bool = False) -> str:
        self.calls += 1
        cmd = [*self.s.command_prefix, *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise BackendError(f"cannot run {cmd[0]}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.s.command_timeout)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise BackendError(f"{argv[0]} did not answer within {self.s.command_timeout:.0f} s",
                               uncertain=True) from exc
        message = err.decode(errors="replace").strip()
        if proc.returncode != 0 and not (unknown_job_ok and "Invalid job id" in message):
            raise BackendError(f"{argv[0]} failed ({proc.returncode}): {message}")
        return out.decode(errors="replace")

    # ---- submission ------------------------------------------------------------------------------------
    def script_name(self) -> str:
        return "job.slurm"

    def flags(self, data: RetrievedPodData) -> list[str]:
        spec = data.pod.spec
        assert spec is not None
        ann = data.pod.metadata.annotations
        flavors = {f.name: f for f in self.s.flavors}
        flavor = None
        if FLAVOR_ANNOTATION in ann:
            flavor = flavors.get(ann[FLAVOR_ANNOTATION])
            if flavor is None:
                raise PodError(
                    f"annotation {FLAVOR_ANNOTATION}={ann[FLAVOR_ANNOTATION]!r} names no flavor; "
                    f"this site has {sorted(flavors) or 'none'}"
                )
        else:
            flavor = next((f for f in self.s.flavors if f.default), None)
        site = [f"--partition={self.s.partition}"] if self.s.partition else []
        flavor_flags = parse_flags(" ".join(flavor.flags), f"flavor {flavor.name!r}") if flavor else []
        ann_flags = parse_flags(ann.get(FLAGS_ANNOTATION, ""), f"annotation {FLAGS_ANNOTATION}",
                                flag_names(self.s.locked_flags))
        derived: list[str] = []
        sc = spec.securityContext
        if sc is not None and sc.runAsUser is not None:
            derived.append(f"--uid={sc.runAsUser}")
        res = pod_resources(spec)
        if "cpu" in res:
            derived.append(f"--cpus-per-task={cpus(res['cpu'])}")
        if "memory" in res:
            derived.append(f"--mem={mebibytes(res['memory'])}M")
        gres = [f"{g}:{count(res[r], r)}" for r, g in self.s.gres.items() if r in res and res[r] > 0]
        if gres:
            derived.append(f"--gres={','.join(gres)}")
        if spec.activeDeadlineSeconds:
            h, rem = divmod(spec.activeDeadlineSeconds, 3600)
            derived.append(f"--time={h}:{rem // 60:02d}:{rem % 60:02d}")
        return merge_flags(site, flavor_flags, ann_flags, derived)

    def render(self, data: RetrievedPodData, job_dir: Path, body: str, script: Path) -> str:
        # The plugin's defaults; the pod's annotation overrides them where the site does not lock them.
        defaults = [f"--job-name={data.pod.metadata.uid}", f"--output={job_dir / 'job.out'}", f"--chdir={job_dir}",
                    accounting_comment(data.pod.metadata.labels, data.pod.metadata.uid)]
        head = ["#!/bin/bash", *(f"#SBATCH {f}" for f in merge_flags(defaults, self.flags(data)))]
        return "\n".join(head) + "\n" + body

    async def submit(self, script: Path, job_dir: Path) -> str:
        out = (await self._run("sbatch", "--parsable", str(script))).strip().splitlines()
        m = _SUBMITTED.match(out[-1]) if out else None
        if not m:
            raise BackendError(f"sbatch gave no job id: {out!r}")
        return m.group(1)

    async def find(self, pod_uid: str) -> str | None:
        """The job of a pod whose submission was not recorded, by its script's path (the job dir is named by
        the pod's uid; the job name may be the pod's own)."""
        out = await self._run("squeue", "-h", "--states=all", "-o", "%i|%o")
        ids = [line.split("|", 1)[0] for line in out.splitlines()
               if line.partition("|")[2].strip().endswith(f"/{pod_uid}/{self.script_name()}")]
        return ids[-1] if ids else None

    # ---- status ------------------------------------------------------------------------------------------
    async def query(self, jids: list[str]) -> dict[str, JobInfo]:
        result: dict[str, JobInfo] = {}
        if not jids:
            return result
        # One call for all pods (-j works for jobs of any user, e.g. submitted with --uid). squeue ignores
        # unknown ids in a list but fails on a single unknown id, hence unknown_job_ok.
        out = await self._run("squeue", "-h", "--states=all", "-j", ",".join(jids), "-o", "%i|%T|%r",
                              unknown_job_ok=True)
        wanted = set(jids)
        for line in out.splitlines():
            parts = line.strip().split("|", 2)
            if len(parts) != 3 or parts[0] not in wanted:
                continue
            jid, state, reason = parts
            result[jid] = self._info(state.split()[0] if state else "", reason)
        return result

    @staticmethod
    def _info(state: str, reason: str) -> JobInfo:
        if state in _PENDING:
            return JobInfo("pending", state, f"Slurm{state.title()}", f"SLURM: {state} ({reason})")
        if state in _RUNNING:
            return JobInfo("running", state)
        why, code = _ENDED.get(state, ("Error", 1))
        return JobInfo("finished", state, why, f"SLURM job {state}", code)

    async def cancel(self, jids: list[str]) -> None:
        if jids:
            await self._run("scancel", *jids)

    async def terminate(self, jid: str) -> bool:
        # Only the batch shell (the runner) gets TERM; a plain scancel would signal every process at once.
        await self._run("scancel", "--batch", "--signal=TERM", jid)
        return True

    # ---- capacity ----------------------------------------------------------------------------------------
    async def capacity(self) -> PingResources:
        argv = ["sinfo", "-h", "-N", "-o", "%n|%c|%m|%G"]
        if self.s.partition:
            argv += ["-p", self.s.partition]
        out = await self._run(*argv)
        nodes: dict[str, tuple[int, int, dict[str, int]]] = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4:
                continue
            name, c, m, g = parts
            nodes[name] = (int(c) if c.isdigit() else 0, int(m) if m.isdigit() else 0, parse_gres(g))
        total_cpu = sum(n[0] for n in nodes.values())
        total_mem = sum(n[1] for n in nodes.values())
        gres_total: dict[str, int] = {}
        for _, _, node_gres in nodes.values():
            for k, v in node_gres.items():
                gres_total[k] = gres_total.get(k, 0) + v
        accel = [
            Accelerator(resourceType=res, available=gres_total[g])
            for res, g in self.s.gres.items()
            if gres_total.get(g)
        ]
        p = self.cfg.ping
        return PingResources(
            cpu=str(max(p.cpu_floor, total_cpu)),
            memory=f"{max(p.memory_floor_mib, total_mem)}Mi",
            pods=p.pods,
            accelerators=accel,
        )
