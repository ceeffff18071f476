"""The bubblewrap sandbox a container runs in: the host's system read-only, the pod's volumes at their paths.

Images are not pulled (there is no container engine here); the host's /usr, /etc and the project venv under
/work stand in for the image, and bwrap gives every container its own mount namespace so that two pods can
mount different volumes at the same path (every notebook has its home at /home/jovyan).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

BWRAP = "/usr/bin/bwrap"
# The host's top-level directories that stand in for the container image (bound read-only when present).
# Not /root nor /work: they hold the host's credentials and the checkouts; the Python environment pods need from
# there is bound on its own (runtime_dirs).
HOST_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt", "/var")
# The capabilities a container running as root starts with (containerd's and Docker's default set); a
# container of another user has none, as on a cluster.
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")


def capabilities(security_context: dict[str, object] | None) -> list[str]:
    """A root container's capabilities: the default set, less `drop`, plus `add` (names with or without CAP_)."""
    caps = (security_context or {}).get("capabilities") or {}
    assert isinstance(caps, dict)

    def names(key: str) -> set[str]:
        return {str(c).upper().removeprefix("CAP_") for c in caps.get(key) or []}

    drop, add = names("drop"), names("add")
    kept = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES) - drop
    return sorted(kept | (add - {"ALL"}))


def runtime_dirs() -> tuple[str, ...]:
    """The Python environment the facility runs from, which the "image" must contain wherever it lives: the
    venv, the interpreter it was made from, and the source roots of the editable install (hub/, extensions/).
    A checkout under /tmp (as CI makes) would otherwise be hidden by the pod's own /tmp. Only these directories,
    not the checkout itself, so a state directory inside the checkout stays out of reach."""
    import aifacility
    import aifacility_interlink

    dirs = {sys.prefix, sys.base_prefix, str(Path(aifacility.__file__).resolve().parents[1]),
            str(Path(aifacility_interlink.__file__).resolve().parents[1])}
    return tuple(sorted(os.path.normpath(d) for d in dirs if os.path.isdir(d)))


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


def _under(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def _bind_host_path(path: str, targets: list[str]) -> list[str]:
    """Bind a host path read-only; when a volume must appear at a new path inside it, rebuild the directory
    in the sandbox's tmpfs from its entries instead (a read-only bind has no room for the mount point)."""
    if os.path.islink(path):
        return ["--symlink", os.readlink(path), path]
    if not os.path.exists(path):
        return []
    inside = [t for t in targets if _under(t, path)]
    if not inside or not os.path.isdir(path) or all(os.path.lexists(t) for t in inside):
        return ["--ro-bind", path, path]
    args = ["--dir", path]
    try:
        entries = sorted(os.listdir(path))
    except OSError:
        return ["--ro-bind", path, path]
    for entry in entries:
        args += _bind_host_path(os.path.join(path, entry), inside)
    return args


def _through_host_links(target: str, host_dirs: tuple[str, ...]) -> str:
    """A mount target under a host directory, with the host's symlinks on its way resolved (/var/run/secrets is
    /run/secrets): the sandbox has the same links, but bwrap would follow an absolute one on the host."""
    target = os.path.normpath(target)
    if any(target == d or _under(target, d) for d in host_dirs):
        return os.path.realpath(target)
    return target


def bwrap_command(command: list[str], *, pod_tmp: Path, mounts: list[Mount], working_dir: str | None = None,
                  hostname: str | None = None, uid: int | None = None, gid: int | None = None,
                  host_dirs: tuple[str, ...] = HOST_DIRS, hidden: tuple[str, ...] = (),
                  image_dirs: tuple[str, ...] | None = None, caps: list[str] | None = None,
                  devices: tuple[str, ...] = ()) -> list[str]:
    """The full argv: bwrap options, then `--` and the container's command.

    `uid`/`gid` (the pod's runAsUser/runAsGroup) run the command in a user namespace where the host's root
    appears as that user: the process sees itself as e.g. jovyan (1000) and owns its volumes, while on the
    host its files stay root's, as with a rootless container runtime.
    """
    mounts = [Mount(m.source, _through_host_links(m.target, host_dirs), m.read_only) for m in mounts]
    targets = [os.path.normpath(m.target) for m in mounts]
    if working_dir:
        targets.append(os.path.normpath(working_dir))
    # An empty /run of the sandbox's own, as a container has: the host's /var/run links to it, and the
    # service-account volume every pod gets by default is mounted under /var/run/secrets.
    args = [BWRAP, "--tmpfs", "/", "--dir", "/run"]
    for d in host_dirs:
        args += _bind_host_path(d, targets)
    # `hidden`: the cluster's state directory holds every user's volumes; under a bound host directory (a
    # state directory in the project under /work, as `aifacility up` uses by default) any pod could read every
    # home there. An empty tmpfs covers it; volume sources under it are still bound (bwrap resolves them on
    # the host).
    for path in hidden:
        if os.path.isdir(path) and any(_under(os.path.normpath(path), d) for d in host_dirs):
            args += ["--tmpfs", os.path.normpath(path)]
    args += ["--bind", str(pod_tmp), "/tmp"]
    for d in runtime_dirs() if image_dirs is None else image_dirs:
        if not any(_under(d, h) for h in host_dirs if h != "/tmp"):
            args += ["--ro-bind", d, d]
    args += ["--dev", "/dev"]
    # A fresh /dev has no GPU: only the device files of the devices the pod was given (a GPU's /dev/nvidiaN,
    # the driver's control files, a MIG instance's capability files) are bound into it. Some exist only once
    # the driver has created them (nvidia-uvm-tools), hence -try. Such a container also gets /sys read-only, as
    # every container has it, for NVML and CUDA to find their PCI devices.
    for path in devices:
        args += ["--dev-bind-try", path, path]
    if devices:
        args += ["--ro-bind", "/sys", "/sys"]
    args += ["--proc", "/proc",
             # The pod shares the host network (it listens on its own loopback IP) but nothing else.
             "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try", "--new-session"]
    if hostname:
        args += ["--unshare-uts", "--hostname", hostname]
    if uid is not None and uid != 0:
        # No capabilities at all (bwrap drops them for another user), and no_new_privs (always set).
        args += ["--unshare-user", "--uid", str(uid), "--gid", str(gid if gid is not None else 0)]
    else:
        # Root in the container: only the capabilities its securityContext leaves it (`caps`), never all.
        args += ["--cap-drop", "ALL"]
        for cap in caps if caps is not None else DEFAULT_CAPABILITIES:
            args += ["--cap-add", f"CAP_{cap}"]
    # Shorter targets first so that a mount inside another volume lands on top of it, as the kubelet orders them.
    for m in sorted(mounts, key=lambda m: (os.path.normpath(m.target).count("/"), m.target)):
        target = os.path.normpath(m.target)
        if not m.source.is_dir() and not os.path.lexists(target):
            parent = os.path.dirname(target)
            if parent != "/":
                args += ["--dir", parent]
        args += ["--ro-bind" if m.read_only else "--bind", str(m.source), target]
    if working_dir:
        args += ["--chdir", working_dir]
    return [*args, "--", *command]
