"""The sequence behind `aifacility up`: the embedded cluster, OIDC provider, hub; stop all on Ctrl-C/SIGTERM."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil

from aifacility.embedded.nodeagent.hostgpus import DiscoveryError, discover, explain, host_node, with_host_node
from aifacility.facility import load_facility
from aifacility.facility.model import Facility
from aifacility.launcher.components import (
    accounting_component,
    cluster_components,
    extra_components,
    gpu_metrics_port,
    hub_component,
    offload_components,
)
from aifacility.launcher.demo_users import DemoUsersError, load_demo_users
from aifacility.launcher.supervisor import Component, LaunchError, Supervisor, port_in_use
from aifacility.oidc.launcher import DemoUser

# How often `up` starts a part again after it exits by itself within RESTART_WINDOW_S (more is a crash loop,
# which stops the facility instead).
RESTARTS = 5
RESTART_WINDOW_S = 600
BACKOFF_MAX_S = 30.0

DEMO_ACCOUNTS = (
    ("alice", "physics, ml"),
    ("bob", "physics"),
    ("dana", "admins (hub admin)"),
    ("eve", "no facility group: refused at login"),
)


@dataclass
class UpOptions:
    facility: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    demo_users: Path | None = None  # YAML list of {username, groups}: accounts added to the demo accounts
    host_gpus: bool = False  # this machine's NVIDIA GPUs as a node of the facility (hostgpus.py)
    gpu_replicas: int | None = None  # time-slicing: each whole GPU advertised this many times (None: the file's)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Stop(Exception):
    pass


class Restarts:
    """Restarts per part in a sliding window, and the back-off before the next one (0, 1, 2, 4 ... 30 s)."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}

    def record(self, name: str) -> int | None:
        """Count a restart of `name`; its number in the window, or None when that is one too many."""
        now = time.monotonic()
        recent = [t for t in self._times.get(name, []) if now - t < RESTART_WINDOW_S]
        if len(recent) >= RESTARTS:
            return None
        recent.append(now)
        self._times[name] = recent
        return len(recent)

    def backoff(self, name: str) -> float:
        n = len(self._times.get(name, []))
        return 0.0 if n <= 1 else min(BACKOFF_MAX_S, 2.0 ** (n - 2))


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _untraversable_parent(path: Path) -> Path | None:
    """The first directory on the way to `path` that other users may not traverse, if any."""
    for d in [*reversed(path.absolute().parents), path.absolute()]:
        if not d.stat().st_mode & 0o001:
            return d
    return None


def run_up(opts: UpOptions) -> int:
    facility = load_facility(opts.facility)  # FacilityError -> one line, exit 2 (cli)
    if opts.host_gpus or facility.host_gpus.enabled:  # the flag, or host_gpus.enabled in the facility file
        try:
            opts, facility = _with_host_gpus(opts, facility)
        except (DiscoveryError, ValueError) as e:
            source = "--host-gpus" if opts.host_gpus else f"host_gpus.enabled in {opts.facility}"
            print(f"aifacility: {source}: {e}", file=sys.stderr)
            return 2
    if not is_loopback(opts.host) and not facility.iam.issuer:
        print("aifacility: the demo accounts exist only while the hub listens on loopback; to listen on "
              f"{opts.host}, set iam.issuer in {opts.facility} to your IAM", file=sys.stderr)
        return 2
    extra_users: tuple[DemoUser, ...] = ()
    if opts.demo_users is not None:
        if not is_loopback(opts.host):
            print(f"aifacility: --demo-users works only while the hub listens on loopback, not on {opts.host} "
                  "(the demo accounts' password is 'demo')", file=sys.stderr)
            return 2
        if facility.iam.issuer:
            print(f"aifacility: --demo-users needs the embedded OIDC provider, but {opts.facility} names an IAM "
                  f"({facility.iam.issuer}); create the accounts there", file=sys.stderr)
            return 2
        try:
            extra_users = load_demo_users(opts.demo_users)
        except DemoUsersError as e:
            print(f"aifacility: {e}", file=sys.stderr)
            return 2
    if port_in_use(opts.host, opts.port):
        print(f"aifacility: port {opts.port} on {opts.host} is already in use; stop what uses it or choose "
              "another one with --port", file=sys.stderr)
        return 2

    state = opts.state_dir
    state.mkdir(parents=True, exist_ok=True)
    logs = state / "logs"
    closed = _untraversable_parent(state)
    if closed is not None:
        print(f"aifacility: warning: {closed} is closed to other users (mode {closed.stat().st_mode & 0o777:o}): "
              "SLURM jobs run as their pod's user (jovyan, uid 1000) and cannot reach their directory under "
              f"{state}/interlink, so offloaded jobs of non-root pods will fail. Choose a --state-dir whose "
              "parents others may traverse (chmod o+x).", file=sys.stderr)
    sup = Supervisor()
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # A local SLURM and the interLink plugin come first: the cluster's virtual node pings the plugin.
        offload, interlink = offload_components(opts, facility, logs)
        for component in offload:
            sup.start(component, timeout=90)
        gpu_metrics = gpu_metrics_port(opts)
        cluster, parts = cluster_components(opts, facility, interlink, gpu_metrics)
        for component in parts:
            sup.start(component, timeout=120)
        sup.start(accounting_component(opts, logs, cluster.plane.admin_kubeconfig, gpu_metrics), timeout=30)
        hub_env: dict[str, str] = {}
        for component in extra_components(opts, facility, logs, extra_users):
            sup.start(component, timeout=60)
            hub_env.update(component.hub_env())
        hub = sup.start(hub_component(opts, logs, hub_env), timeout=120)
        _banner(opts, facility.name, len(extra_users))
        restarts = Restarts()
        while True:
            dead = sup.first_dead()
            if dead is None:
                time.sleep(0.5)
                continue
            # Like a Deployment or a kubelet on a cluster: a part that dies is started again, with back-off,
            # while the others (and the sessions) go on. The hub comes back with its sessions (running ones
            # from its database, pending and queued ones through the spawn keeper); restarting it is also how
            # an operator makes it read an edited configuration. Only a crash loop stops the facility.
            code = dead.proc.returncode if dead.proc else None
            attempt = restarts.record(dead.name)
            if attempt is None:
                print(f"aifacility: {dead.name} keeps exiting (more than {RESTARTS} restarts in "
                      f"{RESTART_WINDOW_S // 60} minutes; log: {dead.log}); stopping the facility", file=sys.stderr)
                return 1
            delay = restarts.backoff(dead.name)
            print(f"aifacility: {dead.name} exited (code {code}); starting it again in {delay:.0f} s "
                  f"(restart {attempt} of at most {RESTARTS} in {RESTART_WINDOW_S // 60} minutes)", flush=True)
            time.sleep(delay)
            try:
                sup.restart(dead, timeout=120)
            except LaunchError as e:
                print(f"aifacility: {dead.name} did not come back: {e}", file=sys.stderr, flush=True)
                continue
            print(f"aifacility: {dead.name} is back" + (f" at {hub_url(opts)}" if dead is hub else ""), flush=True)
    except _Stop:
        print("\naifacility: stopping ...", flush=True)
        return 0
    except LaunchError as e:
        print(f"aifacility: {e}", file=sys.stderr)
        return 1
    finally:
        # Stopping must not be interrupted by a second Ctrl-C half way (that would leave processes behind).
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        sup.stop()
        for s, h in old.items():
            signal.signal(s, h)
        print("aifacility: stopped", flush=True)


def _with_host_gpus(opts: UpOptions, facility: Facility) -> tuple[UpOptions, Facility]:
    """This machine's GPUs as a node of the facility: every part reads the facility file written here."""
    replicas = opts.gpu_replicas if opts.gpu_replicas is not None else facility.host_gpus.replicas
    gpus = discover()
    served = host_node(facility, gpus, cpu=str(os.cpu_count() or 1),
                       memory=f"{psutil.virtual_memory().total // 2**30}Gi", replicas=replicas)
    print("\n".join(f"aifacility: {line}" for line in explain(facility, gpus, served)), flush=True)
    facility = with_host_node(facility, served, replicas)
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    path = opts.state_dir / "facility-with-host-gpus.json"
    path.write_text(facility.model_dump_json(indent=1))
    return dataclasses.replace(opts, facility=path, host_gpus=True, gpu_replicas=replicas), facility


def hub_url(opts: UpOptions) -> str:
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "localhost") else opts.host
    return f"http://{host}:{opts.port}/"


def _banner(opts: UpOptions, name: str, extra_users: int = 0) -> None:
    url = hub_url(opts)
    lines = [
        f"aifacility '{name}' is ready at {url}",
        f"  state directory: {opts.state_dir}",
        f"  kubeconfig:      {opts.state_dir / 'kubeconfig'}   (kubectl --kubeconfig ... get pods -A)",
        f"  logs:            {opts.state_dir / 'logs'}",
    ]
    if is_loopback(opts.host):
        lines.append("  demo accounts (password 'demo'):")
        lines += [f"    {user:<6} {groups}" for user, groups in DEMO_ACCOUNTS]
        if extra_users:
            lines.append(f"    and {extra_users} more from {opts.demo_users}")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


__all__ = ["Component", "UpOptions", "run_up"]
