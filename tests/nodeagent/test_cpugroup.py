"""The pods' cpu cgroup: made under cgroup v1 or v2, and its absence said rather than hidden."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aifacility.embedded.nodeagent.cpugroup import NAME, PodCpuGroup


def test_cgroup_v1_gets_one_process_worth_of_shares(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.shares").write_text("1024")
    group = PodCpuGroup.open(tmp_path)
    assert group.path == tmp_path / "cpu" / NAME
    assert (group.path / "cpu.shares").read_text() == "1024"


def test_cgroup_v2_enables_the_controller_and_sets_a_weight(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    group = PodCpuGroup.open(tmp_path)
    assert group.path == tmp_path / NAME
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"
    assert (group.path / "cpu.weight").read_text() == "100"


def test_no_controller_is_reported_and_commands_run_as_they_are(tmp_path: Path) -> None:
    group = PodCpuGroup.open(tmp_path)
    assert group.path is None and str(tmp_path) in group.reason
    assert group.wrap(["true"]) == ["true"]


def test_the_wrapped_command_enters_the_group_before_it_runs(tmp_path: Path) -> None:
    group = PodCpuGroup(tmp_path)
    out = subprocess.run(group.wrap(["sh", "-c", 'echo "$$ $0 $1"', "a b", "c"]), capture_output=True, text=True,
                         check=True).stdout.split()
    # exec keeps the pid: the process that wrote itself into cgroup.procs is the command, with its arguments
    assert (tmp_path / "cgroup.procs").read_text().strip() == out[0]
    assert out[1:] == ["a", "b", "c"]
