"""One pod on a local node: volumes, init containers in order, containers in parallel, restarts, probes, stop.

Each container is a bubblewrap sandbox running the container's command as a local process in its own process
group; its output (stdout and stderr interleaved) goes to `<pod dir>/<container>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from aifacility.embedded.nodeagent.cpugroup import PodCpuGroup
from aifacility.embedded.nodeagent.devices import DeviceManager
from aifacility.embedded.nodeagent.env import ConfigError, Lookup, container_env, expand_command
from aifacility.embedded.nodeagent.events import EventRecorder, now, now_nano, parse_time
from aifacility.embedded.nodeagent.hooks import run_hook
from aifacility.embedded.nodeagent.podnet import NetworkError, PodNetwork, ServiceForwarder, service_ports
from aifacility.embedded.nodeagent.probes import ExecRunner, liveness_loop, readiness_loop
from aifacility.embedded.nodeagent.provider import Notify
from aifacility.embedded.nodeagent.sandbox import Mount, bwrap_command, capabilities
from aifacility.embedded.nodeagent.status import ContainerState, conditions, pod_phase
from aifacility.embedded.nodeagent.volumes import (
    PreparedVolume,
    VolumeError,
    container_mounts,
    prepare_volumes,
    refresh_rendered,
)

log = logging.getLogger(__name__)

# Directories a program expects to write under $HOME=/root (the host's /root is bound read-only): each pod
# gets its own writable copies, the way a container image's root home is writable in its own layer.
NSENTER = "nsenter"
HOME_WRITABLE = (".local", ".cache", ".config", ".jupyter", ".ipython")
RETRY_SECONDS = 2.0
# postStart hooks block the container's start; one that hangs longer than this counts as failed.
HOOK_SECONDS = 120.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass
class NodeContext:
    """What a pod runner needs from its node and the cluster."""

    name: str
    ip: str
    allocatable: dict[str, str]
    state_dir: Path
    lookup: Callable[[str], Lookup]  # namespace -> (kind, name) -> object | None
    notify: Notify
    events: EventRecorder
    api_host: str = "127.0.0.1"
    api_port: int = 0
    # pod -> a service-account token bound to it (projected serviceAccountToken volumes)
    token: Callable[[dict[str, Any]], str] = lambda pod: ""
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    devices: DeviceManager | None = None
    # image reference -> (ENTRYPOINT, CMD): how a container with no command runs (from the facility file)
    images: Mapping[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    # Containers that ran at least this long restart without the accumulated back-off.
    backoff_reset_seconds: float = 60.0
    # The cluster network (a namespace per pod) and the host ports no pod may reach through it.
    network: PodNetwork | None = None
    internal_ports: frozenset[int] = frozenset()
    # The cpu cgroup every container starts in (see cpugroup): the facility's own processes stay responsive.
    cpu: PodCpuGroup = field(default_factory=lambda: PodCpuGroup(None, "not configured"))


def pod_dir(state_dir: Path, pod: dict[str, Any]) -> Path:
    meta = pod["metadata"]
    return state_dir / "pods" / str(meta.get("namespace") or "default") / f"{meta['name']}_{meta['uid']}"


def run_as(pod: dict[str, Any], container: dict[str, Any]) -> tuple[int | None, int | None]:
    """runAsUser/runAsGroup: the container's securityContext over the pod's."""
    pod_ctx = pod["spec"].get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    return (int(uid) if uid is not None else None, int(gid) if gid is not None else None)


def qos_class(pod: dict[str, Any]) -> str:
    """The pod's QoS class: the API server's (set at creation, and immutable), else computed as it does, from
    CPU and memory only (extended resources such as GPUs do not count)."""
    given = (pod.get("status") or {}).get("qosClass")
    if given:
        return str(given)
    containers = [*(pod["spec"].get("containers") or []), *(pod["spec"].get("initContainers") or [])]
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits = {k: v for k, v in (res.get("limits") or {}).items() if k in ("cpu", "memory")}
        requests = {k: v for k, v in (res.get("requests") or {}).items() if k in ("cpu", "memory")}
        if limits or requests:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in limits or requests.get(r, limits[r]) != limits[r]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


@dataclass(frozen=True)
class Sandbox:
    """How a running container's processes run: its mounts, environment, user and working directory. The
    container's command ran in it; exec probes, lifecycle hooks and `kubectl exec` run their commands in it."""

    pod_tmp: Path
    mounts: tuple[Mount, ...]
    env: dict[str, str]
    working_dir: str | None
    hostname: str
    uid: int | None
    gid: int | None
    hidden: tuple[str, ...]
    caps: tuple[str, ...] | None = None  # a root container's capabilities (sandbox.capabilities)
    netns: str | None = None  # the pod's network namespace (None: the host's network)
    devices: tuple[str, ...] = ()  # device files of the real devices it was given (devices.py)

    def argv(self, command: list[str], *, session: bool = True) -> list[str]:
        """bwrap's argv for `command` in this sandbox. `session=False` keeps the caller's session (bwrap's
        --new-session left out): a terminal of the exec's own, whose process group must reach the command."""
        argv = bwrap_command(command, pod_tmp=self.pod_tmp, mounts=list(self.mounts), working_dir=self.working_dir,
                             hostname=self.hostname, uid=self.uid, gid=self.gid, hidden=self.hidden,
                             caps=list(self.caps) if self.caps is not None else None, devices=self.devices)
        if not session:
            end = argv.index("--")
            argv = [a for a in argv[:end] if a != "--new-session"] + argv[end:]
        if self.netns:
            # nsenter execs bwrap (same pid): the sandbox starts inside the pod's network namespace.
            argv = [NSENTER, f"--net={self.netns}", "--", *argv]
        return argv


# The pods running in this process by uid: the kubelet endpoint (`server.py`) finds a container's sandbox here.
_LIVE: dict[str, PodRunner] = {}


def running_sandbox(pod_uid: str, container: str) -> Sandbox | None:
    """The sandbox of a running container of a pod this process runs (None: no such pod or not running)."""
    runner = _LIVE.get(pod_uid)
    running = runner._running.get(container) if runner is not None else None
    return running.sandbox if running is not None and running.proc.returncode is None else None


@dataclass
class _Running:
    proc: asyncio.subprocess.Process
    started: float
    spec: dict[str, Any]
    exec_runner: ExecRunner
    sandbox: Sandbox
    probe: asyncio.Task[None] | None = None
    liveness: asyncio.Task[None] | None = None


@dataclass
class PodRunner:
    pod: dict[str, Any]
    ctx: NodeContext
    pod_ip: str
    init: list[ContainerState] = field(default_factory=list)
    containers: list[ContainerState] = field(default_factory=list)

    def __post_init__(self) -> None:
        spec = self.pod["spec"]
        self.restart_policy = str(spec.get("restartPolicy") or "Always")
        self.dir = pod_dir(self.ctx.state_dir, self.pod)
        old = self.pod.get("status") or {}
        counts = {s["name"]: int(s.get("restartCount") or 0)
                  for s in [*(old.get("containerStatuses") or []), *(old.get("initContainerStatuses") or [])]}
        self.init = [ContainerState(c["name"], c.get("image", ""), {"waiting": {"reason": "PodInitializing"}},
                                    restart_count=counts.get(c["name"], 0), sidecar=c.get("restartPolicy") == "Always")
                     for c in spec.get("initContainers") or []]
        self.containers = [ContainerState(c["name"], c.get("image", ""), restart_count=counts.get(c["name"], 0))
                           for c in spec.get("containers") or []]
        self.start_time = old.get("startTime") or now()
        self.init_failed = False
        self.sandbox_ready = False
        self.stopping = False
        self.shutting_down = False
        self.deadline_exceeded = False
        self._sidecars_done = False
        self._changed = asyncio.Event()  # set at every state change (publish)
        self._deadline: asyncio.Task[None] | None = None
        self.volumes: dict[str, PreparedVolume] = {}
        self._running: dict[str, _Running] = {}
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._last_published: dict[str, Any] | None = None
        self.netns: str | None = None
        self._forwarder: ServiceForwarder | None = None

    # ---- status ----------------------------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"].get("namespace") or "default")

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def hostname(self) -> str:
        """spec.hostname, else the pod name (cut to a DNS label, as the kubelet does)."""
        return str(self.pod["spec"].get("hostname") or self.name)[:63]

    def phase(self) -> str:
        phase = pod_phase(self.init, self.containers, self.restart_policy, self.init_failed)
        if phase in ("Succeeded", "Failed") and any(c.running for c in self.init):
            # The main containers are done, but sidecars (restartable init containers) still stop: the pod is
            # terminal only once they have, so its final status shows every container terminated.
            return "Running"
        return phase

    def status(self) -> dict[str, Any]:
        phase = "Failed" if self.deadline_exceeded else self.phase()
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions(self.init, self.containers, phase, self.sandbox_ready),
            "hostIP": self.ctx.ip,
            "hostIPs": [{"ip": self.ctx.ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "qosClass": qos_class(self.pod),
            "containerStatuses": [c.to_status() for c in self.containers],
        }
        if self.init:
            status["initContainerStatuses"] = [c.to_status() for c in self.init]
        if self.deadline_exceeded:
            status["reason"] = "DeadlineExceeded"
            status["message"] = DEADLINE_MESSAGE
        return status

    def publish(self) -> None:
        self._changed.set()
        if self.shutting_down:
            return  # a stopping node agent reports nothing: the pod is picked up again at the next start
        status = self.status()
        comparable = {**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                               for c in status["conditions"]]}
        if comparable == self._last_published:
            return
        self._last_published = comparable
        self.ctx.notify(self.pod, status)

    def _event(self, reason: str, message: str, *, warning: bool = False, container: str | None = None) -> None:
        path = None
        if container is not None:
            kind = "initContainers" if any(c.name == container for c in self.init) else "containers"
            path = f"spec.{kind}{{{container}}}"
        self.ctx.events.record(self.pod, reason, message, type="Warning" if warning else "Normal",
                               host=self.ctx.name, field_path=path)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        _LIVE[self.pod["metadata"]["uid"]] = self
        self._task = asyncio.create_task(self._run())
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            started = parse_time(self.start_time) or time.time()
            self._deadline = asyncio.create_task(self._enforce_deadline(started + int(deadline) - time.time()))

    async def _enforce_deadline(self, seconds: float) -> None:
        """spec.activeDeadlineSeconds: the kubelet stops the pod and fails it (the pod object stays)."""
        await asyncio.sleep(max(seconds, 0))
        if self.stopping or self.phase() in ("Succeeded", "Failed"):
            return
        self._event("DeadlineExceeded", DEADLINE_MESSAGE, warning=True)
        await self.stop(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), keep_deadline=True)
        self.deadline_exceeded = True
        self.publish()

    async def wait(self) -> None:
        await self._done.wait()

    async def _run(self) -> None:
        try:
            await self._run_pod()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("pod %s/%s failed in the agent", self.namespace, self.name)
            for c in self.containers:
                if not c.terminated:
                    c.state = {"waiting": {"reason": "RunContainerError", "message": str(e)}}
            self.publish()
        finally:
            with contextlib.suppress(Exception):
                await self._close_network()
            if self.ctx.devices is not None:
                self.ctx.devices.release(self.pod["metadata"]["uid"])
            if _LIVE.get(self.pod["metadata"]["uid"]) is self:
                del _LIVE[self.pod["metadata"]["uid"]]
            self._done.set()

    async def _run_pod(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        (self.dir / "tmp").chmod(0o1777)
        for d in HOME_WRITABLE:
            (self.dir / "home" / d).mkdir(parents=True, exist_ok=True)
        self.publish()
        await self._open_network()
        await self._prepare_volumes()
        self.sandbox_ready = True
        self.publish()
        spec = self.pod["spec"]
        sidecars: list[asyncio.Task[bool]] = []
        try:
            for c_spec, cs in zip(spec.get("initContainers") or [], self.init, strict=True):
                if cs.sidecar:
                    # Started in order like any init container, then kept running (and restarted) beside the
                    # containers; the next init container starts once it runs.
                    sidecars.append(asyncio.create_task(self._container_loop(c_spec, cs, init=False,
                                                                             policy="Always")))
                    while not cs.initialized() and not sidecars[-1].done():
                        self._changed.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._changed.wait(), 1.0)
                    continue
                ok = await self._container_loop(c_spec, cs, init=True)
                if not ok:
                    return
            for cs in self.containers:
                cs.state = {"waiting": {"reason": "ContainerCreating"}}
            self.publish()
            await asyncio.gather(*(self._container_loop(c_spec, cs, init=False)
                                   for c_spec, cs in zip(spec.get("containers") or [], self.containers,
                                                         strict=True)))
        finally:
            if sidecars:
                # The containers are done for good (or the pod stops): the sidecars stop too, in reverse order.
                self._sidecars_done = True
                for name in reversed([c.name for c in self.init if c.sidecar]):
                    running = self._running.get(name)
                    if running is not None:
                        signal_tree(running.proc.pid, signal.SIGTERM)
                await asyncio.wait(sidecars, timeout=float(spec.get("terminationGracePeriodSeconds", 30)))
                for name, running in list(self._running.items()):
                    if any(c.name == name and c.sidecar for c in self.init):
                        signal_tree(running.proc.pid, signal.SIGKILL)
                await asyncio.gather(*sidecars, return_exceptions=True)
        self.publish()

    async def _open_network(self) -> None:
        """The pod's network namespace with its address, and the host services it may reach (see podnet.py);
        retried as the kubelet retries a sandbox it could not create."""
        net = self.ctx.network
        if net is None or not net.isolated or self.pod["spec"].get("hostNetwork"):
            return
        spec = self.pod["spec"]
        values = [str(e.get("value") or "") for c in [*(spec.get("initContainers") or []), *spec["containers"]]
                  for e in c.get("env") or []]
        ports = service_ports(values, [self.ctx.api_port] if self.ctx.api_port else [], self.ctx.internal_ports)
        last_error = ""
        while True:
            try:
                self.netns = await net.attach(self.pod["metadata"]["uid"], self.pod_ip)
                if self.netns is not None:
                    self._forwarder = await ServiceForwarder.start(self.netns, ports)
                return
            except NetworkError as e:
                await self._close_network()
                if str(e) != last_error:
                    last_error = str(e)
                    self._event("FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}", warning=True)
            await asyncio.sleep(RETRY_SECONDS)

    async def _close_network(self) -> None:
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            await forwarder.close()
        netns, self.netns = self.netns, None
        if netns is not None and self.ctx.network is not None:
            await self.ctx.network.detach(self.pod["metadata"]["uid"])

    async def _prepare_volumes(self) -> None:
        last_error = ""
        while True:
            try:
                self.volumes = prepare_volumes(self.pod, self.dir, self.ctx.state_dir,
                                               self.ctx.lookup(self.namespace), self.ctx.allocatable,
                                               lambda: self.ctx.token(self.pod))
                return
            except VolumeError as e:
                if str(e) != last_error:
                    last_error = str(e)
                    self._event("FailedMount", last_error, warning=True)
            await asyncio.sleep(RETRY_SECONDS)

    async def refresh_volumes(self) -> None:
        """The pod's rendered volumes follow their Secrets, ConfigMaps and its labels (once they were set up)."""
        if not self.volumes or self.stopping:
            return
        changed = await asyncio.to_thread(refresh_rendered, self.pod, self.dir, self.ctx.lookup(self.namespace),
                                          self.ctx.allocatable, lambda: self.ctx.token(self.pod))
        if changed:
            log.info("pod %s/%s: volumes %s updated", self.namespace, self.name, ", ".join(changed))

    async def _container_loop(self, spec: dict[str, Any], cs: ContainerState, *, init: bool,
                              policy: str | None = None) -> bool:
        """Run a container until it is done for good; True when it (finally) succeeded."""
        restart_policy = policy or self.restart_policy
        failures = 0
        while not self.stopping:
            started = time.monotonic()
            code = await self._run_container(spec, cs)
            if code is None or self.stopping or (cs.sidecar and self._sidecars_done):
                return code == 0
            if code == 0 and (init or restart_policy != "Always"):
                return True
            if restart_policy == "Never":
                if init:
                    self.init_failed = True
                    self.publish()
                return False
            # Always, or OnFailure with a failure: restart after the kubelet's exponential back-off.
            failures = 1 if time.monotonic() - started > self.ctx.backoff_reset_seconds else failures + 1
            delay = min(self.ctx.backoff_base * 2 ** (failures - 1), self.ctx.backoff_max)
            cs.last_state = {"terminated": cs.state.get("terminated", {})}
            uid = self.pod["metadata"]["uid"]
            cs.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                f"back-off {delay:g}s restarting failed container={cs.name} "
                f"pod={self.name}_{self.namespace}({uid})")}}
            self._event("BackOff", f"Back-off restarting failed container {cs.name} in pod "
                        f"{self.name}_{self.namespace}({uid})", warning=True, container=cs.name)
            self.publish()
            await asyncio.sleep(delay)
            cs.restart_count += 1
        return False

    def _mounts(self, spec: dict[str, Any], env: dict[str, str]) -> list[Mount]:
        mounts = container_mounts(spec, self.volumes, env)
        targets = {os.path.normpath(m.target) for m in mounts}
        home = env.get("HOME", "/root")
        if home == "/root":
            for d in HOME_WRITABLE:
                if f"/root/{d}" not in targets:
                    mounts.append(Mount(self.dir / "home" / d, f"/root/{d}"))
        return mounts

    async def _wait_forever_unless_stopped(self) -> None:
        await self._stop_event.wait()

    async def _run_container(self, spec: dict[str, Any], cs: ContainerState) -> int | None:
        """One run of a container; its exit code, or None when it can never start (or the pod stops)."""
        env = await self._container_env(spec, cs)
        if env is None:
            return None
        image = self.ctx.images.get(str(spec.get("image") or ""))
        command = expand_command(spec, env, image)
        if not spec.get("command") and image is None:
            cs.state = {"waiting": {"reason": "CreateContainerError", "message": (
                f"container {cs.name!r} has no command and its image {spec.get('image')!r} is not in the facility "
                "file's images (whose entrypoint and cmd say how it runs): the node agent runs no image of its "
                "own, so set command, or list the image")}}
            self._event("Failed", f"Error: {cs.state['waiting']['message']}", warning=True, container=cs.name)
            self.publish()
            await self._wait_forever_unless_stopped()
            return None
        try:
            mounts = self._mounts(spec, env)
        except VolumeError as e:
            cs.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            self._event("Failed", f"Error: {e}", warning=True, container=cs.name)
            self.publish()
            await self._wait_forever_unless_stopped()
            return None
        exe = command[0]
        if "/" not in exe and shutil.which(exe, path=env.get("PATH")) is None:
            stamp = now()
            message = (f'failed to create containerd task: failed to create shim task: OCI runtime create failed: '
                       f'exec: "{exe}": executable file not found in $PATH')
            cs.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message,
                                       "startedAt": stamp, "finishedAt": stamp}}
            self._event("Failed", f"Error: {message}", warning=True, container=cs.name)
            self.publish()
            return 128
        uid, gid = run_as(self.pod, spec)
        sandbox = Sandbox(pod_tmp=self.dir / "tmp", mounts=tuple(mounts), env=env,
                          working_dir=spec.get("workingDir") or None, hostname=self.hostname, uid=uid, gid=gid,
                          hidden=(str(self.ctx.state_dir),), caps=tuple(capabilities(spec.get("securityContext"))),
                          netns=self.netns,
                          devices=self.ctx.devices.files(self.pod["metadata"]["uid"], cs.name)
                          if self.ctx.devices is not None else ())
        argv = self.ctx.cpu.wrap(sandbox.argv(command))
        log_path = self.dir / f"{cs.name}.log"
        if log_path.exists():
            log_path.replace(self.dir / f"{cs.name}.log.1")
        if cs.restart_count == 0 and not cs.last_state:
            self._event("Pulled", f'Container image "{spec.get("image", "")}" already present on machine',
                        container=cs.name)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=str(self.dir), start_new_session=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [asyncio.create_task(_pump(proc.stdout, "stdout", log_fd)),
                 asyncio.create_task(_pump(proc.stderr, "stderr", log_fd))]
        started_at = now()
        cs.container_id = f"bwrap://{proc.pid}"
        cs.state = {"running": {"startedAt": started_at}}
        probe = spec.get("readinessProbe")
        cs.ready = probe is None
        def exec_runner(cmd: list[str], seconds: float) -> Awaitable[int]:
            return _exec(sandbox, cmd, seconds)

        running = _Running(proc, time.monotonic(), spec, exec_runner, sandbox)
        self._running[cs.name] = running
        self._event("Created", f"Created container {cs.name}", container=cs.name)
        self._event("Started", f"Started container {cs.name}", container=cs.name)
        self.publish()
        post_start = (spec.get("lifecycle") or {}).get("postStart")
        if post_start and not await run_hook(post_start, spec, self.pod_ip, exec_runner, HOOK_SECONDS):
            # As the kubelet: a failed postStart hook kills the container, which then restarts per policy.
            self._event("FailedPostStartHook", f"PostStartHook failed for container {cs.name}", warning=True,
                        container=cs.name)
            signal_tree(proc.pid, signal.SIGKILL)
        if probe is not None:
            running.probe = asyncio.create_task(readiness_loop(
                probe, spec, self.pod_ip, exec_runner, lambda ok: self._set_ready(cs, ok)))
        liveness = spec.get("livenessProbe")
        if liveness is not None:
            async def restart() -> None:
                self._event("Unhealthy", "Liveness probe failed", warning=True, container=cs.name)
                self._event("Killing", f"Container {cs.name} failed liveness probe, will be restarted",
                            container=cs.name)
                signal_tree(proc.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), float(self.pod["spec"].get("terminationGracePeriodSeconds",
                                                                                   30)))
                if proc.returncode is None:
                    signal_tree(proc.pid, signal.SIGKILL)

            running.liveness = asyncio.create_task(liveness_loop(liveness, spec, self.pod_ip, exec_runner, restart))
        try:
            code = await proc.wait()
            # Everything in the sandbox died with its command (pid namespace), so the pipes close promptly.
            await asyncio.wait(pumps, timeout=5)
        finally:
            for t in pumps:
                t.cancel()
            os.close(log_fd)
            for task in (running.probe, running.liveness):
                if task is not None:
                    task.cancel()
            self._running.pop(cs.name, None)
        # A signal death is reported the way container runtimes do: 128 + signal number.
        code = 128 - code if code < 0 else code
        cs.ready = False
        cs.state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                   "startedAt": started_at, "finishedAt": now(),
                                   "containerID": cs.container_id}}
        self.publish()
        return code

    async def _container_env(self, spec: dict[str, Any], cs: ContainerState) -> dict[str, str] | None:
        last_error = ""
        while not self.stopping:
            try:
                pod = {**self.pod, "status": {**(self.pod.get("status") or {}), "podIP": self.pod_ip,
                                              "podIPs": [{"ip": self.pod_ip}], "hostIP": self.ctx.ip}}
                env = container_env(pod, spec, self.ctx.lookup(self.namespace), self.ctx.allocatable)
                if self.ctx.devices is not None:
                    # The device plugin's answer wins over the pod's own env: a container cannot widen its devices.
                    env.update(self.ctx.devices.allocate(self.pod["metadata"]["uid"], spec))
                if self.ctx.api_port:
                    env.setdefault("KUBERNETES_SERVICE_HOST", self.ctx.api_host)
                    env.setdefault("KUBERNETES_SERVICE_PORT", str(self.ctx.api_port))
                return env
            except ConfigError as e:
                if str(e) != last_error:
                    last_error = str(e)
                    cs.state = {"waiting": {"reason": "CreateContainerConfigError", "message": last_error}}
                    self._event("Failed", f"Error: {last_error}", warning=True, container=cs.name)
                    self.publish()
            await asyncio.sleep(RETRY_SECONDS)
        return None

    def _set_ready(self, cs: ContainerState, ok: bool) -> None:
        cs.ready = ok and cs.running
        self.publish()

    # ---- stop ------------------------------------------------------------------------------------------------

    async def stop(self, grace: float, *, shutdown: bool = False, keep_deadline: bool = False) -> None:
        """SIGTERM every container's processes, SIGKILL what is left after `grace` seconds.

        `shutdown`: the whole cluster stops; no events and no status, as when a kubelet goes down."""
        self.stopping = True
        self.shutting_down = shutdown
        if self._deadline is not None and not keep_deadline:
            self._deadline.cancel()
        self._stop_event.set()
        running = dict(self._running)
        for name in running:
            if not shutdown:
                self._event("Killing", f"Stopping container {name}", container=name)
        started = time.monotonic()
        hooks = [(name, r) for name, r in running.items() if (r.spec.get("lifecycle") or {}).get("preStop")]
        if hooks and not shutdown:
            # preStop hooks run first and use up the grace period (the kubelet then adds 2 s for SIGTERM).
            results = await asyncio.gather(*(run_hook(r.spec["lifecycle"]["preStop"], r.spec, self.pod_ip,
                                                      r.exec_runner, max(grace, 0)) for _, r in hooks))
            for (name, _), ok in zip(hooks, results, strict=True):
                if not ok:
                    self._event("FailedPreStopHook", f"PreStopHook failed for container {name}", warning=True,
                                container=name)
        left = max(grace - (time.monotonic() - started), 2.0 if hooks and not shutdown else 0.0)
        for r in running.values():
            signal_tree(r.proc.pid, signal.SIGTERM)
        if running:
            waits = [asyncio.create_task(r.proc.wait()) for r in running.values()]
            _done, pending = await asyncio.wait(waits, timeout=left)
            for r in running.values():
                if r.proc.returncode is None:
                    signal_tree(r.proc.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=10)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._close_network()
        if _LIVE.get(self.pod["metadata"]["uid"]) is self:
            del _LIVE[self.pod["metadata"]["uid"]]
        self._done.set()

    def pids(self) -> list[int]:
        return [r.proc.pid for r in self._running.values()]


async def _exec(sandbox: Sandbox, command: list[str], seconds: float) -> int:
    """An exec probe's or hook's command in the container's sandbox: its exit code (1 after `seconds`)."""
    proc = await asyncio.create_subprocess_exec(*sandbox.argv(command), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                                                env=sandbox.env, start_new_session=True)
    try:
        return await asyncio.wait_for(proc.wait(), seconds)
    except TimeoutError:
        signal_tree(proc.pid, signal.SIGKILL)
        await proc.wait()
        return 1


async def _pump(reader: asyncio.StreamReader, stream: str, fd: int) -> None:
    """Copy a container's output into its log in the kubelet's CRI format: `<time> <stream> <F|P> <text>`."""
    while True:
        tag = "F"
        try:
            chunk = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return
            chunk = e.partial + b"\n"
        except asyncio.LimitOverrunError as e:
            # A line longer than the buffer: written as partial pieces, as the kubelet splits long lines.
            chunk = await reader.readexactly(e.consumed) + b"\n"
            tag = "P"
        os.write(fd, f"{now_nano()} {stream} {tag} ".encode() + chunk)


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal a sandbox and everything in it (bwrap does not forward signals to the command)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    for child in reversed(children):
        with contextlib.suppress(psutil.Error):
            child.send_signal(sig)
    if sig == signal.SIGKILL or not children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
