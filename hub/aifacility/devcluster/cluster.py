"""DevCluster: the store, the Kubernetes API server and the controllers, in one process on one event loop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml
from aiohttp import web

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.controller import NodeAgent
from aifacility.devcluster.api import make_app
from aifacility.devcluster.gc import GarbageCollector
from aifacility.devcluster.jobs import JobController, job_admission_hook
from aifacility.devcluster.kueue import KueueController, make_visibility_extension
from aifacility.devcluster.logs import LogRegistry
from aifacility.devcluster.nodes import apply_nodes
from aifacility.devcluster.pv import VolumeBinder
from aifacility.devcluster.scheduler import Scheduler
from aifacility.devcluster.store import AlreadyExists, Store
from aifacility.devcluster.virtualnode import VirtualNodes
from aifacility.facility.model import Facility

log = logging.getLogger(__name__)

CONTEXT = "aifacility-dev"
# The API server takes any bearer token (there is one user, the developer); clients insist on sending one.
TOKEN = "aifacility-devcluster"


class Controller(Protocol):
    async def start(self, cluster: DevCluster) -> None: ...
    async def stop(self) -> None: ...


class DevCluster:
    """A small, faithful Kubernetes for development and tests (see ARCHITECTURE.md)."""

    def __init__(self, facility: Facility, state_dir: Path, host: str = "127.0.0.1", port: int = 0, *,
                 extensions: Iterable[Callable[[web.Application], None]] = (),
                 plugins: Iterable[Callable[[DevCluster], None]] = (),
                 backoff_base: float = 1.0, interlink_urls: Mapping[str, str] | None = None) -> None:
        self.facility = facility
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.port = port
        self.store: Store = None  # type: ignore[assignment]  # set by start()
        self.logs = LogRegistry(self.state_dir)
        self.agent = NodeAgent(backoff_base=backoff_base)
        self.scheduler = Scheduler()
        self.kueue = KueueController()
        # interLink virtual nodes: a plugin URL per node from the facility file or `interlink_urls` (which wins);
        # ValueError names an unknown node or a bad URL.
        self.virtual_nodes = VirtualNodes(facility, interlink_urls)
        self._extensions = list(extensions)
        # Called at start with the store open, before the API and the controllers start: the place to
        # register providers for virtual nodes (self.agent.register_provider), their log providers
        # (self.logs.register), API extensions and controllers.
        self._plugins = [*plugins, self.virtual_nodes.prepare]
        self._controllers: list[Any] = [VolumeBinder(), self.scheduler, self.agent, JobController(),
                                        GarbageCollector(), self.kueue, self.virtual_nodes]
        self._started: list[Any] = []
        self._runner: web.AppRunner | None = None

    # ---- composition -------------------------------------------------------------------------------------------

    def add_controller(self, controller: Controller) -> None:
        """A controller with `async start(cluster)` / `async stop()`, started after the built-in ones."""
        self._controllers.append(controller)

    def add_extension(self, extension: Callable[[web.Application], None]) -> None:
        """An API extension (extra routes / API groups); before start()."""
        self._extensions.append(extension)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, register the nodes, serve the API, start the controllers; returns when it answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.state_dir / "store.sqlite")
        try:
            apply_nodes(self.store, self.facility)
            self._ensure_namespace(self.facility.namespace)
            self.kueue.install(self.store)
            self.store.add_hook(job_admission_hook)
            for plugin in self._plugins:
                plugin(self)
            app = make_app(self.store, logs=self.logs,
                           extensions=[make_visibility_extension(self.store), *self._extensions])
            # Open watches are what is left at shutdown; waiting for them gains nothing.
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.3)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
            # The bound socket tells the port when 0 was asked for.
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
            self._write_kubeconfig()
            for controller in self._controllers:
                await controller.start(self)
                self._started.append(controller)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the controllers (every pod process ends), the API server and the store."""
        while self._started:
            controller = self._started.pop()
            try:
                await controller.stop()
            except Exception:
                log.exception("stopping %s failed", type(controller).__name__)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            self.store.close()

    async def __aenter__(self) -> DevCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- helpers -----------------------------------------------------------------------------------------------

    def _ensure_namespace(self, name: str) -> None:
        with contextlib.suppress(AlreadyExists):
            self.store.create(kinds.NAMESPACE, {"metadata": {"name": name}})

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
            "current-context": CONTEXT,
            "preferences": {},
        }

    def _write_kubeconfig(self) -> None:
        tmp = self.kubeconfig_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig_path)
