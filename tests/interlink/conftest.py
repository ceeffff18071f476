"""Fixtures: a real SLURM (LocalSlurm), the plugin as a real server process."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from interlink_helpers import PluginProcess

from aifacility_interlink.localslurm import LocalSlurm


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "htcondor_live: needs a real schedd (AIFACILITY_HTCONDOR_SCHEDD)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Live HTCondor tests are deselected (not skipped) unless a schedd is configured or they are asked for
    # with -m htcondor_live (then, without a schedd, they fail and say what to set).
    if os.environ.get("AIFACILITY_HTCONDOR_SCHEDD") or "htcondor_live" in (config.getoption("markexpr") or ""):
        return
    live = [i for i in items if i.get_closest_marker("htcondor_live")]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [i for i in items if not i.get_closest_marker("htcondor_live")]


@pytest.fixture
def count_shim(tmp_path: Path) -> tuple[Path, Path]:
    """A command prefix that records every SLURM command and fails scancel while a flag file exists."""
    calls, fail = tmp_path / "slurm-calls.txt", tmp_path / "fail-scancel"
    shim = tmp_path / "slurm-shim"
    shim.write_text(
        "#!/bin/bash\n"
        f'echo "$1" >> {calls}\n'
        f'if [[ $1 == scancel && -e {fail} ]]; then echo "scancel: error: Unable to contact slurm controller" >&2;'
        " exit 1; fi\n"
        'exec "$@"\n'
    )
    shim.chmod(0o755)
    return shim, calls


@pytest.fixture
def plugin_factory(tmp_path: Path) -> Iterator[Callable[..., PluginProcess]]:
    started: list[PluginProcess] = []

    def make(cluster: LocalSlurm | None, runtime: str = "bwrap", auth: bool = True, **config: Any) -> PluginProcess:
        """A plugin over `cluster` (None: no SLURM); with a bearer token unless auth=False."""
        env = cluster.env() if cluster else {**os.environ, "SLURM_CONF": str(tmp_path / "no-slurm.conf")}
        cfg: dict[str, Any] = {"delete_retry_seconds": 0.5, **config}
        p = PluginProcess(tmp_path / f"plugin{len(started)}", env, runtime, cfg, auth=auth)
        started.append(p)
        return p.start()

    yield make
    for p in started:
        p.kill(signal.SIGTERM)


