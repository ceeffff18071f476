"""A stock JupyterHub (SimpleLocalProcessSpawner, DummyAuthenticator): the baseline our facility is measured against."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from support.hub_process import HubProcess


def start_vanilla_hub(workdir: Path) -> HubProcess:
    hub = HubProcess(workdir)
    return hub.launch(textwrap.dedent(f"""
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
        c.SimpleLocalProcessSpawner.home_dir_template = "{workdir}/home/{{username}}"
        c.Spawner.cmd = ["{Path(sys.executable).parent / 'jupyterhub-singleuser'}"]
        c.Spawner.args = ["--allow-root"]
        c.Spawner.default_url = "/lab"
        c.JupyterHub.services = [{{"name": "bench", "api_token": "{hub.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers", "tokens"],
                                     "services": ["bench"]}}]
    """), timeout=60)
