"""The processes of the embedded facility, each described as a supervised Component."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from aifacility.embedded.cluster import EmbeddedCluster
from aifacility.embedded.controlplane.plane import stable_port
from aifacility.facility.model import Facility
from aifacility.launcher.secrets import persistent_secret
from aifacility.launcher.supervisor import Component, LaunchError, http_ok
from aifacility.oidc.launcher import DEMO_USERS, DemoUser, EmbeddedOIDCProvider
from aifacility_interlink.client import TOKEN_FILE_ENV, read_token_file
from aifacility_interlink.localslurm import SBIN, SLURMDBD, LocalSlurm, LocalSlurmError

if TYPE_CHECKING:
    from aifacility.launcher.up import UpOptions

HUB_CONFIG = Path(__file__).resolve().parents[2] / "jupyterhub_config.py"


def public_url(opts: UpOptions) -> str:
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "localhost") else opts.host
    return f"http://{host}:{opts.port}"


def gpu_metrics_port(opts: UpOptions) -> int | None:
    """With --host-gpus: where the node agent serves the GPUs' figures (Prometheus, the accounting collector)."""
    return stable_port(opts.state_dir, "gpu-metrics") if opts.host_gpus else None


def cluster_components(opts: UpOptions, facility: Facility, interlink: dict[str, str] | None = None,
                       gpu_metrics: int | None = None) -> tuple[EmbeddedCluster, list[Component]]:
    """The embedded cluster's parts in start order: the control plane, Kueue, the facility's objects and the
    node agent. `interlink`: virtual node -> URL of the plugin started for it (see offload_components);
    `gpu_metrics`: the port of the GPUs' figures (gpu_metrics_port)."""
    cluster = EmbeddedCluster(facility, opts.state_dir)
    # the virtual nodes authenticate to the plugins offload_components started (PluginClient's token)
    env = {TOKEN_FILE_ENV: str(interlink_token_file(opts.state_dir))} if interlink else {}
    return cluster, cluster.components(opts.facility, interlink=interlink, env=env, gpu_metrics_port=gpu_metrics)


class LocalSlurmComponent(Component):
    """A one-node SLURM (munged, slurmctld, slurmd) with its state under `<state-dir>/slurm`."""

    def __init__(self, state_dir: Path, partition: str, accounting: bool = False) -> None:
        self.slurm = LocalSlurm(state_dir / "slurm", partition=partition, accounting=accounting)
        super().__init__(name="SLURM", argv=(), log=self.slurm.workdir / "log" / "slurmctld.log")

    def start(self) -> None:
        try:
            self.slurm.start()  # returns once the node is idle; a failed start stops what it had started
        except LocalSlurmError as e:
            raise LaunchError(f"the local SLURM did not start: {e}") from None

    def alive(self) -> bool:
        procs = self.slurm._procs
        return bool(procs) and all(p.poll() is None for p in procs.values())

    def stop(self, grace: float = 15.0) -> None:
        self.slurm.stop()


def interlink_token_file(state_dir: Path) -> Path:
    """The bearer token shared by the plugins `up` starts and the cluster's virtual nodes (0600, kept across
    restarts): the plugin answers nothing else, so no notebook can create, read or delete offloaded jobs."""
    persistent_secret(state_dir, "interlink-token")
    path = state_dir / "secrets" / "interlink-token"
    path.chmod(0o600)
    return path


def _plugin_ready(url: str, token: str) -> Callable[[], bool]:
    """interLink's own health check: `GET /status` with the body `[]` answers 200."""
    def check() -> bool:
        req = urllib.request.Request(f"{url}/status", data=b"[]", method="GET",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False
    return check


def offload_components(opts: UpOptions, facility: Facility, logs: Path) -> tuple[list[Component], dict[str, str]]:
    """Components to start before the cluster: a local SLURM and the interLink plugin for the facility's SLURM
    virtual nodes that name no plugin of their own, when this machine has SLURM installed; and the
    `--interlink NODE=URL` the cluster then gets. HTCondor virtual nodes get no plugin here (no schedd): the
    cluster shows them NotReady, saying that no plugin is configured."""
    nodes = [n for n in facility.nodes if n.interlink is not None and n.interlink.backend == "slurm"
             and not n.interlink.url]
    if not nodes or not (SBIN / "slurmctld").exists() or not (SBIN / "munged").exists():
        return [], {}
    partition = next((n.interlink.partition for n in nodes if n.interlink and n.interlink.partition), "debug")
    # A site whose usage the facility reads from SLURM's accounting gets slurmdbd, and a sacct collector.
    sites = {facility.queues.site(n.name, virtual=True) for n in nodes}
    accounted = sorted(sites & set(facility.accounting.batch_accounted_sites))
    slurm = LocalSlurmComponent(opts.state_dir, partition, accounting=bool(accounted) and SLURMDBD.exists())
    port = stable_port(opts.state_dir, "interlink-slurm")
    url = f"http://127.0.0.1:{port}"
    root = opts.state_dir / "interlink"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "slurm.yaml"
    config.write_text(yaml.safe_dump({"slurm": {"partition": partition}}))
    token_file = interlink_token_file(opts.state_dir)
    plugin = Component(
        name="interLink plugin (SLURM)",
        argv=[sys.executable, "-m", "aifacility_interlink", "serve", "--backend", "slurm", "--runtime", "bwrap",
              "--listen", f"127.0.0.1:{port}", "--data-root", str(root / "slurm"), "--config", str(config),
              "--token-file", str(token_file)],
        env={"SLURM_CONF": str(slurm.slurm.conf)},
        log=logs / "interlink-slurm.log",
        ready=_plugin_ready(url, read_token_file(token_file)),
    )
    parts = [slurm, plugin]
    if slurm.slurm.accounting:
        parts += [sacct_component(opts, logs, slurm.slurm, site) for site in accounted]
    return parts, {n.name: url for n in nodes}


def sacct_component(opts: UpOptions, logs: Path, slurm: LocalSlurm, site: str) -> Component:
    """The sacct collector of an offload site, reading the local SLURM's accounting into the usage ledger."""
    return Component(
        name=f"accounting collector (sacct, {site})",
        argv=[sys.executable, "-m", "aifacility.cli", "accounting", "sacct", "--db", accounting_db(opts.state_dir),
              "--site", site, "--interval", "5"],
        env={"SLURM_CONF": str(slurm.conf)},
        log=logs / f"accounting-sacct-{site}.log",
    )


def accounting_db(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'accounting' / 'ledger.sqlite'}"


def accounting_component(opts: UpOptions, logs: Path, kubeconfig: Path, gpu_metrics: int | None = None) -> Component:
    """The pod collector, filling the usage ledger that `aifacility report --db ...` reads (see
    docs/admin/accounting.md). An operator's process: it reads every pod and node with the admin kubeconfig.
    With this machine's GPUs (`gpu_metrics`: the node agent's port for their figures) it takes the GPU energy
    of each pod from there, as it would from the DCGM exporter on a cluster."""
    dcgm = ["--dcgm-url", f"http://127.0.0.1:{gpu_metrics}/metrics"] if gpu_metrics else []
    return Component(
        name="accounting collector",
        argv=[sys.executable, "-m", "aifacility.cli", "accounting", "collect", "--db", accounting_db(opts.state_dir),
              "--kubeconfig", str(kubeconfig), "--facility", str(opts.facility),
              "--metrics-port", str(stable_port(opts.state_dir, "accounting-metrics")), *dcgm],
        log=logs / "accounting.log",
    )


class OIDCComponent(Component):
    """The embedded OIDC provider (a Node process its own launcher supervises) as a facility component."""

    def __init__(self, provider: EmbeddedOIDCProvider) -> None:
        super().__init__(name="OIDC provider", argv=(), log=provider.log_path)
        self.provider = provider

    def start(self) -> None:
        self.provider.start()

    def alive(self) -> bool:
        proc = self.provider._proc
        return proc is not None and proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        self.provider.stop()

    def hub_env(self) -> dict[str, str]:
        return {"AIFACILITY_IAM_ISSUER": self.provider.issuer,
                "AIFACILITY_IAM_CLIENT_SECRET": self.provider.client_secret}


def oidc_provider(opts: UpOptions, extra_users: tuple[DemoUser, ...] = ()) -> EmbeddedOIDCProvider:
    """`extra_users`: accounts from `--demo-users`, served beside the built-in demo accounts."""
    return EmbeddedOIDCProvider(
        state_dir=opts.state_dir / "oidc", port=stable_port(opts.state_dir, "oidc"),
        redirect_uris=[f"{public_url(opts)}/hub/oauth_callback"], users=(*DEMO_USERS, *extra_users),
    )


def extra_components(opts: UpOptions, facility: Facility, logs: Path,
                     extra_users: tuple[DemoUser, ...] = ()) -> Iterator[Component]:
    """Components between the cluster and the hub: the embedded OIDC provider when no IAM is configured."""
    if not facility.iam.issuer:
        yield OIDCComponent(oidc_provider(opts, extra_users))


def hub_env(opts: UpOptions, extra: dict[str, str]) -> dict[str, str]:
    state = opts.state_dir
    return {
        **extra,
        "AIFACILITY_PUBLIC_URL": public_url(opts),
        "AIFACILITY_FACILITY": str(opts.facility),
        "AIFACILITY_STATE_DIR": str(state),
        "AIFACILITY_HUB_DATA": str(state / "hub"),
        "AIFACILITY_PUBLIC_IP": opts.host,
        "AIFACILITY_PUBLIC_PORT": str(opts.port),
        # Stable, because running sessions keep the hub's and the lifetimes service's addresses.
        "AIFACILITY_HUB_PORT": str(stable_port(state, "hub")),
        "AIFACILITY_PROXY_API_PORT": str(stable_port(state, "proxy-api")),
        "AIFACILITY_LIFETIMES_PORT": str(stable_port(state, "lifetimes")),
        # Dask schedulers keep the gateway's address for their lifetime.
        "AIFACILITY_DASK_URL": f"http://127.0.0.1:{stable_port(state, 'dask-gateway')}",
        # The usage service reads the ledger the accounting collector fills.
        "AIFACILITY_ACCOUNTING_DB": accounting_db(state),
        "AIFACILITY_USAGE_URL": f"http://127.0.0.1:{stable_port(state, 'usage')}",
        "AIFACILITY_ADMIN_TOKEN": persistent_secret(state, "admin-api-token"),
        # The hub's own identity: the chart's service account and RBAC, never the admin's kubeconfig.
        "KUBECONFIG": str(EmbeddedCluster.hub_kubeconfig_path(state)),
        "JUPYTERHUB_CRYPT_KEY": persistent_secret(state, "crypt-key", 32),
        "CONFIGPROXY_AUTH_TOKEN": persistent_secret(state, "proxy-auth-token"),
    }


def hub_component(opts: UpOptions, logs: Path, env: dict[str, str]) -> Component:
    data = opts.state_dir / "hub"
    data.mkdir(parents=True, exist_ok=True)
    return Component(
        name="JupyterHub",
        argv=[sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
        env=hub_env(opts, env),
        cwd=data,
        log=logs / "hub.log",
        ready=http_ok(f"{public_url(opts)}/hub/health", accept=lambda code: code == 200),
    )
