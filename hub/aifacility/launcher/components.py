"""The processes of the embedded facility, each described as a supervised Component."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from aifacility.facility.model import Facility
from aifacility.launcher.secrets import persistent_secret
from aifacility.launcher.supervisor import Component, free_port, http_ok

if TYPE_CHECKING:
    from aifacility.launcher.up import UpOptions

HUB_CONFIG = Path(__file__).resolve().parents[2] / "jupyterhub_config.py"


def cluster_component(opts: UpOptions, facility: Facility, logs: Path) -> Component:
    port = free_port()
    return Component(
        name="development cluster",
        argv=[sys.executable, "-m", "aifacility.devcluster", "--facility", str(opts.facility),
              "--state-dir", str(opts.state_dir), "--listen", f"127.0.0.1:{port}"],
        log=logs / "devcluster.log",
        ready=http_ok(f"http://127.0.0.1:{port}/readyz", accept=lambda code: code == 200),
    )


def extra_components(opts: UpOptions, facility: Facility, logs: Path, cluster: Component) -> Iterator[Component]:
    """Components between the cluster and the hub (the OIDC provider, interLink plugins)."""
    yield from ()


def hub_env(opts: UpOptions) -> dict[str, str]:
    state = opts.state_dir
    return {
        "AIFACILITY_FACILITY": str(opts.facility),
        "AIFACILITY_STATE_DIR": str(state),
        "AIFACILITY_HUB_DATA": str(state / "hub"),
        "AIFACILITY_PUBLIC_IP": opts.host,
        "AIFACILITY_PUBLIC_PORT": str(opts.port),
        "AIFACILITY_HUB_PORT": str(free_port()),
        "AIFACILITY_PROXY_API_PORT": str(free_port()),
        "AIFACILITY_ADMIN_TOKEN": persistent_secret(state, "admin-api-token"),
        "KUBECONFIG": str(state / "kubeconfig"),
        "JUPYTERHUB_CRYPT_KEY": persistent_secret(state, "crypt-key", 32),
        "CONFIGPROXY_AUTH_TOKEN": persistent_secret(state, "proxy-auth-token"),
    }


def hub_component(opts: UpOptions, facility: Facility, logs: Path) -> Component:
    data = opts.state_dir / "hub"
    data.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "localhost") else opts.host
    return Component(
        name="JupyterHub",
        argv=[sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
        env=hub_env(opts),
        cwd=data,
        log=logs / "hub.log",
        ready=http_ok(f"http://{host}:{opts.port}/hub/health", accept=lambda code: code == 200),
    )
