"""The plugin's behaviour, independent of HTTP: create, status, delete, logs, ping, and the retry loops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

from .backends.base import Backend, BackendError, JobInfo
from .bodies import clip
from .config import PluginConfig
from .contract import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    CreateStruct,
    LogStruct,
    ObjectMeta,
    PingResources,
    PingResponse,
    Pod,
    PodSecurityContext,
    PodStatus,
    RetrievedPodData,
    Taint,
)
from .runner import ScriptBuilder
from .store import PodRow, Store
from .volumes import PodError

log = logging.getLogger("aifacility_interlink")

# What Kubernetes allows: a namespace is a DNS-1123 label, a pod name a DNS-1123 subdomain, a uid a UUID. The job
# dir is named by the uid alone (never built from names, so no two pods can meet in one dir).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
JOBS_DIR = "jobs"


def check_metadata(meta: ObjectMeta) -> None:
    """PodError naming the field when the pod's namespace, name or uid is not what Kubernetes allows."""
    checks = [
        ("uid", meta.uid, _UUID, 36, "a UUID such as 0f8e6a2c-3b1d-4c5e-9f7a-1b2c3d4e5f60"),
        ("namespace", meta.namespace, _DNS_LABEL, 63, "a DNS-1123 label: lower-case letters, digits and '-'"),
        ("name", meta.name, _DNS_SUBDOMAIN, 253,
         "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.'"),
    ]
    for field, value, shape, longest, what in checks:
        if not value:
            raise PodError(f"pod.metadata.{field} is missing; it must be {what}")
        if len(value) > longest:
            raise PodError(f"pod.metadata.{field} is {len(value)} characters long; Kubernetes allows at most "
                           f"{longest}")
        if not shape.fullmatch(value):
            raise PodError(f"pod.metadata.{field} {clip(value)} is not {what}")

# A job the batch system does not list yet/anymore and that left no exit status is only declared lost after
# this long (sbatch returns before squeue is guaranteed to list the job on a busy controller).
LOST_AFTER_SECONDS = 60.0
# A deleted pod's job stops within its grace period; it is cancelled if it still runs this long after that.
GRACE_MARGIN_SECONDS = 10.0
# Why the job's supervisor killed a container (the last word of its status file), as the kubelet says it.
_KILLED = {
    "LivenessProbe": "killed after failing its liveness probe",
    "StartupProbe": "killed after failing its startup probe",
    "FailedPostStartHook": "killed: its postStart hook failed",
    "Stopped": "stopped: the pod was deleted",
}


def _hand_over(job_dir: Path, sc: PodSecurityContext | None) -> None:
    """A job that runs as another user (runAsUser → --uid) must own its dir: it writes logs and exit
    statuses there and reads its secrets (mode 0600). Only root can give files away."""
    if sc is None or sc.runAsUser is None or os.geteuid() != 0:
        return
    gid = sc.runAsGroup if sc.runAsGroup is not None else sc.runAsUser
    for root, dirs, files in os.walk(job_dir):
        os.chown(root, sc.runAsUser, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), sc.runAsUser, gid, follow_symlinks=False)


def _grace_seconds(pod: Pod) -> int:
    """How long a deleted pod's containers may take to stop: the deletion's grace period, else the pod's, else
    Kubernetes' default of 30 s."""
    if pod.metadata.deletionGracePeriodSeconds is not None:
        return max(0, pod.metadata.deletionGracePeriodSeconds)
    if pod.spec is not None and pod.spec.terminationGracePeriodSeconds is not None:
        return pod.spec.terminationGracePeriodSeconds
    return 30


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


class UnknownPod(LookupError):
    """The plugin has no record of this pod (or container)."""


class Conflict(ValueError):
    """The request contradicts what the plugin already did (e.g. re-creating a deleted pod)."""


class PluginService:
    def __init__(self, cfg: PluginConfig, backend: Backend) -> None:
        self.cfg = cfg
        self.backend = backend
        (cfg.data_root / JOBS_DIR).mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.data_root / "plugin.sqlite")
        self.scripts = ScriptBuilder(cfg)
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = defaultdict(int)
        self._capacity: PingResources | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(self.cfg.delete_retry_seconds, self.retry_deletes)),
            asyncio.create_task(self._loop(self.cfg.ping.refresh_seconds, self.refresh_capacity)),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.close()

    async def _loop(self, every: float, fn: object) -> None:
        while True:
            try:
                await fn()  # type: ignore[operator]
            except Exception:  # a background loop must survive a flaky batch system
                log.exception("background task %s failed; retrying in %.0f s", fn, every)
            await asyncio.sleep(every)

    @contextlib.asynccontextmanager
    async def _pod_lock(self, uid: str) -> AsyncIterator[None]:
        """One request at a time per pod; the lock is dropped when nobody holds or waits for it."""
        lock = self._locks.setdefault(uid, asyncio.Lock())
        self._lock_users[uid] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[uid] -= 1
            if not self._lock_users[uid]:
                del self._lock_users[uid]
                self._locks.pop(uid, None)

    # ---- create ------------------------------------------------------------------------------------------
    def job_dir(self, uid: str) -> Path:
        """Keyed by the pod's uid alone. Pods created before this layout keep their `<namespace>-<uid>` dirs:
        every later use of a job dir reads it from the pod's row."""
        return self.cfg.data_root / JOBS_DIR / uid

    async def create(self, data: RetrievedPodData) -> CreateStruct:
        meta = data.pod.metadata
        check_metadata(meta)
        if data.pod.spec is None:
            raise PodError("pod.spec is missing")
        async with self._pod_lock(meta.uid):
            row = self.store.get(meta.uid)
            if row is not None and row.phase == "submitted" and row.jid:
                return CreateStruct(PodUID=meta.uid, PodJID=row.jid)  # a retried /create: same job
            if row is not None and row.phase in ("deleting", "deleted"):
                raise Conflict(f"pod {meta.namespace}/{meta.name} ({meta.uid}) was deleted; it cannot be re-created")
            if row is not None and row.phase == "submitting":
                # The plugin died between submitting and recording: find the job instead of submitting twice.
                jid = await self.backend.find(meta.uid)
                if jid:
                    self.store.submitted(meta.uid, jid)
                    return CreateStruct(PodUID=meta.uid, PodJID=jid)
            return await self._submit(data)

    async def _submit(self, data: RetrievedPodData) -> CreateStruct:
        meta, spec = data.pod.metadata, data.pod.spec
        assert spec is not None
        job_dir = self.job_dir(meta.uid)
        if job_dir.exists():  # this pod's own dir, left by a refused or unrecorded earlier attempt
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
        try:
            gpus = self.backend.gpu_count(data) > 0
            body = self.scripts.body(data, job_dir, gpus)
            script = job_dir / self.backend.script_name()
            script.write_text(self.backend.render(data, job_dir, body, script))
            script.chmod(0o755)
            _hand_over(job_dir, spec.securityContext)
        except PodError:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        containers = {
            "init": [[c.name, c.image] for c in spec.initContainers or []],
            "run": [[c.name, c.image] for c in spec.containers],
        }
        self.store.begin_submit(meta.uid, meta.namespace, meta.name, job_dir, json.dumps(containers))
        try:
            jid = await self.backend.submit(script, job_dir)
        except BackendError as exc:
            if not exc.uncertain:  # refused: nothing was submitted, forget the attempt
                self.store.forget(meta.uid)
                shutil.rmtree(job_dir, ignore_errors=True)
            # else the row stays "submitting": interLink's retry looks the job up by name first
            raise
        self.store.submitted(meta.uid, jid)
        (job_dir / "JobID.jid").write_text(jid + "\n")
        return CreateStruct(PodUID=meta.uid, PodJID=jid)

    # ---- status ------------------------------------------------------------------------------------------
    async def status(self, pods: list[Pod]) -> list[PodStatus]:
        rows = self.store.get_many([p.metadata.uid for p in pods])
        live = [r for r in rows.values() if r.final_status is None and r.jid and r.phase in ("submitted", "deleting")]
        infos = await self.backend.query([r.jid for r in live if r.jid]) if live else {}
        out: list[PodStatus] = []
        for pod in pods:
            row = rows.get(pod.metadata.uid)
            if row is None or row.phase == "deleted":
                out.append(self._unknown(pod))
            elif row.final_status is not None:
                out.append(PodStatus.model_validate_json(row.final_status))
            else:
                st, final = self._build(row, infos.get(row.jid or ""))
                if final:
                    self.store.set_final(row.uid, st.model_dump_json())
                out.append(st)
        return out

    def _unknown(self, pod: Pod) -> PodStatus:
        spec = pod.spec
        waiting = ContainerState(waiting=ContainerStateWaiting(
            reason="NotKnownToPlugin", message="the plugin has no job for this pod"))
        return PodStatus(
            name=pod.metadata.name, UID=pod.metadata.uid, namespace=pod.metadata.namespace,
            containers=[ContainerStatus(name=c.name, image=c.image, state=waiting) for c in (spec.containers
                        if spec else [])],
        )

    def _build(self, row: PodRow, info: JobInfo | None) -> tuple[PodStatus, bool]:
        ctn_dir = row.dir + "/ctn"
        present: set[str] = set()
        if info is None or info.state != "pending":  # a pending job has not written anything yet
            try:
                present = set(os.listdir(ctn_dir))
            except OSError:
                pass
        if info is None and time.time() - row.created < LOST_AFTER_SECONDS:
            info = JobInfo("pending", "UNLISTED", "Submitted", "waiting for the batch system to list the job")
        if info is None:
            info = JobInfo("finished", "GONE", "JobLost",
                           f"the batch system no longer knows job {row.jid} and it left no exit status", 1)
        spec = json.loads(row.containers)
        init_failed = False
        statuses: dict[str, list[ContainerStatus]] = {"init": [], "run": []}
        all_done = True
        for kind in ("init", "run"):
            init_running = kind == "run" and any(
                s.state.terminated is None for s in statuses["init"])
            for name, image in spec[kind]:
                cs = self._ctn_status(ctn_dir, f"{kind}-{name}", name, image, present, info, init_failed,
                                      init_running)
                state = cs.state
                if state.terminated is None:
                    all_done = False
                elif kind == "init" and state.terminated.exitCode != 0 and f"init-{name}.status" in present:
                    init_failed = True  # it ran and failed (not: the whole job was cancelled)
                statuses[kind].append(cs)
        st = PodStatus(name=row.name, UID=row.uid, namespace=row.namespace, JID=row.jid or "",
                       containers=statuses["run"], initContainers=statuses["init"])
        return st, all_done

    @staticmethod
    def _ctn_status(ctn_dir: str, base: str, name: str, image: str, present: set[str], info: JobInfo,
                    init_failed: bool, init_running: bool) -> ContainerStatus:
        """A container's status from the files its supervisor left (see runner.py and probes.py)."""
        state = PluginService._ctn_state(ctn_dir, base, present, info, init_failed, init_running)
        restarts = _read(f"{ctn_dir}/{base}.restarts") if f"{base}.restarts" in present else ""
        last = None
        if f"{base}.last" in present:
            code, started, finished, why = [*_read(f"{ctn_dir}/{base}.last").split(" ", 3), "", "", ""][:4]
            last = ContainerState(terminated=ContainerStateTerminated(
                exitCode=int(code) if code.lstrip("-").isdigit() else 1, reason="Error",
                message=_KILLED.get(why, why), startedAt=started or None, finishedAt=finished or None))
        if state.running is not None and f"{base}.backoff" in present:
            state = ContainerState(waiting=ContainerStateWaiting(
                reason="CrashLoopBackOff", message="back-off before restarting the killed container"))
        running = state.running is not None
        supervised = base.startswith("run-")  # init containers have no probes: ready while they run
        return ContainerStatus(
            name=name, image=image, state=state, lastState=last, restartCount=int(restarts or 0),
            ready=running and (not supervised or f"{base}.ready" in present),
            started=running and (not supervised or f"{base}.started-ok" in present))

    @staticmethod
    def _ctn_state(ctn_dir: str, base: str, present: set[str], info: JobInfo, init_failed: bool,
                   init_running: bool) -> ContainerState:
        started = None
        if f"{base}.started" in present:
            started = _read(f"{ctn_dir}/{base}.started") or None
        if f"{base}.status" in present:
            code, finished, why = [*_read(f"{ctn_dir}/{base}.status").split(" ", 2), "", ""][:3]
            ec = int(code) if code.lstrip("-").isdigit() else 1
            if why == "OOMKilled" or (ec == 137 and info.native == "OUT_OF_MEMORY"):
                reason, message = "OOMKilled", "the container went over its memory limit"
            else:
                reason, message = "Completed" if ec == 0 else "Error", _KILLED.get(why, why)
            return ContainerState(terminated=ContainerStateTerminated(
                exitCode=ec, reason=reason, message=message, startedAt=started, finishedAt=finished or None))
        if info.state == "finished":
            if started is None and init_failed:
                reason, msg = "InitContainerFailed", "not started: an init container failed"
            else:
                reason, msg = info.reason or "Error", info.message
            return ContainerState(terminated=ContainerStateTerminated(
                exitCode=info.exit_code or 1, reason=reason, message=msg, startedAt=started))
        if info.state == "running" and started is not None:
            return ContainerState(running=ContainerStateRunning(startedAt=started))
        if info.state == "running":
            reason = "PodInitializing" if init_running else "ContainerCreating"
            return ContainerState(waiting=ContainerStateWaiting(reason=reason))
        return ContainerState(waiting=ContainerStateWaiting(reason=info.reason, message=info.message))

    # ---- delete ------------------------------------------------------------------------------------------
    async def delete(self, pod: Pod) -> str:
        uid = pod.metadata.uid
        async with self._pod_lock(uid):
            row = self.store.get(uid)
            if row is None:
                raise UnknownPod(f"pod {clip(pod.metadata.namespace, quote=False)}/"
                                 f"{clip(pod.metadata.name, quote=False)} ({clip(uid, quote=False)}) is not known")
            if row.phase == "deleted":
                return "already deleted"
            grace = _grace_seconds(pod)
            if grace and row.jid and row.final_status is None and await self._stop_gracefully(row, grace):
                return (f"job {row.jid} asked to stop (preStop hooks, then TERM to its containers); cancelled if "
                        f"still running after {grace} s")
            self.store.mark_deleting(uid)
        done = await self._reap([row])
        if uid in done:
            return f"job {row.jid} cancelled"
        return f"cancel of job {row.jid} requested; the plugin retries until the batch system confirms"

    async def _stop_gracefully(self, row: PodRow, grace: int) -> bool:
        """TERM to a running job's runner, as the kubelet stops a pod; the retry loop cancels it after `grace`."""
        try:
            info = (await self.backend.query([row.jid or ""])).get(row.jid or "")
            if info is None or info.state != "running":
                return False  # pending or ended: nothing to stop gracefully
            # recorded first (a crash still cancels it); the margin lets SLURM deliver the signal and the runner exit
            self.store.mark_deleting(row.uid, time.time() + grace + GRACE_MARGIN_SECONDS)
            if await self.backend.terminate(row.jid or ""):
                return True
        except BackendError as exc:
            log.info("job %s not stopped gracefully (%s); cancelling it", row.jid, exc)
        return False

    async def retry_deletes(self) -> None:
        rows = self.store.in_phase("deleting")
        if rows:
            await self._reap(rows)
        # The same loop keeps the database from growing with every pod ever deleted.
        pruned = self.store.prune_deleted(self.cfg.deleted_retention_seconds)
        if pruned:
            log.info("forgot %d pod(s) deleted more than %.0f s ago", pruned, self.cfg.deleted_retention_seconds)

    async def _reap(self, rows: list[PodRow]) -> set[str]:
        """Cancel these pods' jobs and mark as deleted those the batch system reports as ended."""
        done: set[str] = set()
        try:
            jid_of: dict[str, str | None] = {}
            for r in rows:
                jid_of[r.uid] = r.jid
                if r.jid is None:  # crashed while submitting: the job may still exist under the pod's name
                    jid_of[r.uid] = await self.backend.find(r.uid)
            jids = [j for j in jid_of.values() if j]
            before = await self.backend.query(jids)
            active = [j for j in jids if j in before and before[j].state != "finished"]
            # A job asked to stop gracefully is left its grace period before it is cancelled.
            now = time.time()
            due = {jid_of[r.uid] for r in rows if r.cancel_after is None or r.cancel_after <= now}
            if [j for j in active if j in due]:
                await self.backend.cancel([j for j in active if j in due])
            after = await self.backend.query(active) if active else {}
            for r in rows:
                jid = jid_of[r.uid]
                info = after.get(jid or "") or before.get(jid or "")
                if jid is None or info is None or info.state == "finished":
                    self.store.mark_deleted(r.uid)
                    shutil.rmtree(r.job_dir, ignore_errors=True)
                    done.add(r.uid)
        except BackendError as exc:
            for r in rows:
                if r.uid not in done:
                    self.store.delete_failed(r.uid, str(exc))
            log.warning("delete not confirmed yet (%s); will retry", exc)
        return done

    # ---- logs --------------------------------------------------------------------------------------------
    def log_file(self, req: LogStruct) -> tuple[Path, Path]:
        row = self.store.get(req.PodUID)
        if row is None or row.phase == "deleted":
            raise UnknownPod(f"pod {clip(req.Namespace, quote=False)}/{clip(req.PodName, quote=False)} "
                             f"({clip(req.PodUID, quote=False)}) is not known")
        spec = json.loads(row.containers)
        for kind in ("init", "run"):
            if any(name == req.ContainerName for name, _ in spec[kind]):
                base = row.job_dir / "ctn" / f"{kind}-{req.ContainerName}"
                return Path(f"{base}.out"), Path(f"{base}.status")
        names = [n for k in ("init", "run") for n, _ in spec[k]]
        raise UnknownPod(f"pod {clip(req.PodName, quote=False)} has no container {clip(req.ContainerName)} "
                         f"(it has {names})")

    # ---- ping --------------------------------------------------------------------------------------------
    async def refresh_capacity(self) -> None:
        try:
            self._capacity = await self.backend.capacity()
        except BackendError as exc:
            log.warning("capacity not refreshed: %s", exc)

    async def ping(self) -> PingResponse:
        # The first ping can come before the background refresh has asked the backend once (a virtual node
        # that starts with the plugin): ask now, so the node's first capacity is the site's, not empty.
        if self._capacity is None:
            await self.refresh_capacity()
        return PingResponse(
            status="ok",
            resources=self._capacity,
            taints=[Taint.model_validate(t) for t in self.cfg.ping.taints],
        )
