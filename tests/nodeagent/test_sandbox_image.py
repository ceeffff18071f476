"""The sandbox's stand-in for the image contains the facility's Python environment wherever the checkout is."""

from __future__ import annotations

from pathlib import Path

from aifacility.embedded.nodeagent.sandbox import bwrap_command, runtime_dirs


def test_a_checkout_under_tmp_is_bound_over_the_pods_own_tmp(tmp_path: Path) -> None:
    venv = "/tmp/ci/checkout/.venv"
    argv = bwrap_command(["true"], pod_tmp=tmp_path, mounts=[], image_dirs=(venv, "/work/main/hub", "/usr/lib/x"))
    tmp_bind = argv.index(str(tmp_path))
    assert argv[tmp_bind + 1] == "/tmp"
    ro = [i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] == venv]
    assert ro and ro[0] > tmp_bind  # after the pod's /tmp, so it is visible on top of it
    # /work is no host directory of the image: the sources are bound on their own ...
    assert any(a == "--ro-bind" and argv[i + 1] == "/work/main/hub" for i, a in enumerate(argv))
    # ... and a directory already inside a bound host directory is not bound twice
    assert not any(a == "--ro-bind" and argv[i + 1] == "/usr/lib/x" for i, a in enumerate(argv))


def test_runtime_dirs_hold_the_running_interpreter_and_sources() -> None:
    import sys

    import aifacility

    dirs = runtime_dirs()
    assert sys.prefix in dirs
    assert str(Path(aifacility.__file__).resolve().parents[1]) in dirs
