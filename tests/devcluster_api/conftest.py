"""Fixtures: the devcluster store + API server on 127.0.0.1 (in a background thread), a kubeconfig, clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aifacility.devcluster.api import make_app
from aifacility.devcluster.logs import LogRegistry
from aifacility.devcluster.store import Store

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: dev
  cluster: {{server: "{url}"}}
users:
- name: dev
  user: {{token: dummy-token}}
contexts:
- name: dev
  context: {{cluster: dev, user: dev, namespace: default}}
current-context: dev
"""


class ApiServer:
    """The store and API app on their own event loop in a thread, so tests can block on kubectl/sync clients."""

    def __init__(self, state_dir: Path, *, history_size: int = 20000, bookmark_interval: float = 0.5) -> None:
        self.state_dir = state_dir
        self.history_size = history_size
        self.bookmark_interval = bookmark_interval
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store: Store | None = None
        self.logs: LogRegistry | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run a synchronous store call on the server's loop (the store is single-threaded by design)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def start(self) -> None:
        async def up() -> str:
            self.store = Store(self.state_dir / "store.sqlite", history_size=self.history_size)
            self.logs = LogRegistry(self.state_dir)
            app = make_app(self.store, logs=self.logs, bookmark_interval=self.bookmark_interval)
            self.runner = web.AppRunner(app, shutdown_timeout=0.5)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            host, port = self.runner.addresses[0][:2]
            return f"http://{host}:{port}"

        self.url = asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        (self.state_dir / "kubeconfig").write_text(KUBECONFIG.format(url=self.url))

    def stop(self) -> None:
        async def down() -> None:
            if self.runner is not None:
                await self.runner.cleanup()
            if self.store is not None:
                self.store.close()

        future: Future[None] = asyncio.run_coroutine_threadsafe(down(), self.loop)
        future.result(10)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    srv = ApiServer(tmp_path)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def kubectl(server: ApiServer) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real kubectl against the server; `check=False` to look at failures."""

    def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 30):
        env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
        proc = subprocess.run(
            ["kubectl", *args], env=env, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    return run


@pytest.fixture
def k8s(server: ApiServer) -> Iterator[Any]:
    """The official `kubernetes` client configured for the server (an ApiClient)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    yield api
    api.close()
