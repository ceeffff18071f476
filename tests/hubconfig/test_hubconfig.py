"""The hub configuration as `jupyterhub -f hub/jupyterhub_config.py` loads it: every part's notebook environment
and arguments reach the configured spawner class, whichever section each part (or Zero to JupyterHub) wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from aifacility.hubconfig import add_spawner_args, add_spawner_environment, spawner_sections
from aifacility.spawner import FacilitySpawner

HUB_CONFIG = Path(__file__).resolve().parents[2] / "hub" / "jupyterhub_config.py"


def test_sections_follow_the_spawner_class() -> None:
    c = Config()
    assert spawner_sections(c) == ["Spawner"]
    c.JupyterHub.spawner_class = "simple"
    assert spawner_sections(c) == ["Spawner"]
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    assert spawner_sections(c) == ["Spawner", "KubeSpawner"]
    c.JupyterHub.spawner_class = FacilitySpawner
    assert spawner_sections(c) == ["Spawner", "KubeSpawner", "FacilitySpawner"]


def test_parts_add_to_one_another_in_any_order() -> None:
    c = Config()
    c.Spawner.environment = {"FROM_SPAWNER": "1", "SHARED": "base"}
    c.KubeSpawner.environment = {"DASK_GATEWAY__ADDRESS": "http://gw"}  # as z2jh writes singleuser.extraEnv
    c.Spawner.args = ["--allow-root"]
    c.JupyterHub.spawner_class = FacilitySpawner
    add_spawner_environment(c, {"SHARED": "facility", "HOME": "/home"})
    add_spawner_args(c, ["--allow-root", "--ServerApp.ip=$(POD_IP)"])
    add_spawner_args(c, ["--notice"])
    assert c.FacilitySpawner.environment == {"FROM_SPAWNER": "1", "SHARED": "facility",
                                             "DASK_GATEWAY__ADDRESS": "http://gw", "HOME": "/home"}
    assert c.FacilitySpawner.args == ["--allow-root", "--ServerApp.ip=$(POD_IP)", "--notice"]


def test_the_hub_config_gives_the_notebooks_every_parts_settings(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIFACILITY_HUB_DATA", str(tmp_path))
    monkeypatch.setenv("AIFACILITY_IAM_ISSUER", "http://127.0.0.1:1/")
    c = Config()
    exec(compile(HUB_CONFIG.read_text(), str(HUB_CONFIG), "exec"), {"c": c})
    env, args = c.FacilitySpawner.environment, c.FacilitySpawner.args
    assert {"POD_IP", "HOME", "AIFACILITY_TOKEN_FILE", "BEARER_TOKEN_FILE", "AIFACILITY_LIFETIMES_API"} <= set(env)
    assert args[0] == "--ServerApp.ip=$(POD_IP)"
    assert "--allow-root" not in args  # notebooks run as jovyan, never as root
    assert c.FacilitySpawner.uid == 1000 and c.FacilitySpawner.gid == 100
    assert "--ServerApp.jpserver_extensions=aifacility.notebook=True" in args
    # the session's time and budgets are the JupyterLab extension's (aifacility_lab), not the update check's
    assert not any(a.startswith("--LabApp.check_for_updates_class=") for a in args)
    assert "environment" not in c.Spawner and "args" not in c.Spawner  # nothing left where it would be shadowed
