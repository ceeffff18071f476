"""The pods' CPU weight: all pods of the machine together weigh as much as one of the facility's own processes.

On a real cluster the hub, the API server and the identity provider do not share CPU with notebooks: they run
on other nodes, or a kubelet puts every pod under its node-allocatable cgroup (`kubepods`) so that the node's
daemons keep the CPU reserved for them (kube-reserved, system-reserved). The embedded facility runs everything on
one machine, where Linux's autogroup scheduling gives each session an equal share: twenty notebook servers
starting (each in its own session, as bubblewrap's `--new-session` makes it) left the hub a twenty-fifth of the
CPU, and logins queued for half a minute behind them (`make bench ARGS=login_load`).

So the node agent starts every container in one cpu cgroup, as a kubelet does. CPU shares only weigh; they do
not cap: pods get the whole machine when the facility's processes are idle. Where no cpu controller can be
written (a container without cgroup delegation), pods compete as before and the agent says so at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NAME = "aifacility-pods"
CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_SHARES = 1024  # cgroup v1 cpu.shares of one nice-0 process (or autogroup)
V2_WEIGHT = 100  # cgroup v2 cpu.weight of the same


@dataclass(frozen=True)
class PodCpuGroup:
    """The cgroup every container process is started in; `path` None where none could be made."""

    path: Path | None
    reason: str = ""

    @classmethod
    def open(cls, root: Path = CGROUP_ROOT) -> PodCpuGroup:
        v1 = root / "cpu"
        try:
            if (v1 / "cpu.shares").exists():
                group = v1 / NAME
                group.mkdir(exist_ok=True)
                (group / "cpu.shares").write_text(str(V1_SHARES))
                return cls(group)
            if "cpu" in (root / "cgroup.controllers").read_text().split():
                # cgroup v2: the controller must be enabled for the root's children (no processes may sit in
                # an inner cgroup that delegates it, which holds for the root).
                if "cpu" not in (root / "cgroup.subtree_control").read_text().split():
                    (root / "cgroup.subtree_control").write_text("+cpu")
                group = root / NAME
                group.mkdir(exist_ok=True)
                (group / "cpu.weight").write_text(str(V2_WEIGHT))
                return cls(group)
        except OSError as e:
            return cls(None, f"cannot write a cpu cgroup under {root}: {e.strerror or e}")
        return cls(None, f"no cpu cgroup controller under {root}")

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` started inside the group: the shell moves itself in and then becomes the command, so that
        every process the command starts is in it from its first instruction (no window to escape)."""
        if self.path is None:
            return argv
        procs = self.path / "cgroup.procs"
        return ["/bin/sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]

    def holds(self, pid: int) -> bool:
        """Whether process `pid` runs in this group."""
        if self.path is None:
            return False
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return False
        rel = "/" + self.path.relative_to(self.path.parent).as_posix()
        return any(line.split(":", 2)[2] == rel and ("cpu" in line.split(":", 2)[1].split(",")
                                                    or line.startswith("0::")) for line in lines)


def describe(group: PodCpuGroup) -> str:
    return (f"pods run in the cpu cgroup {group.path}" if group.path is not None
            else f"WARNING: pods compete with the facility's processes for CPU ({group.reason})")

