"""Fixtures: a real DevCluster (demo facility, temporary state dir) on its own event loop in a thread, so that
tests can block on kubectl and the synchronous Kubernetes client while the cluster keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aifacility.devcluster import DevCluster
from aifacility.facility import load_facility
from aifacility.facility.model import Facility


class RunningCluster:
    def __init__(self, facility: Facility, state_dir: Path) -> None:
        self.facility = facility
        self.state_dir = state_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster: DevCluster | None = None

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """A synchronous store call, made on the cluster's loop (the store is single-threaded by design)."""

        async def run() -> Any:
            return fn()

        return self.run(run(), 10)

    def start(self) -> DevCluster:
        self.cluster = DevCluster(self.facility, self.state_dir, backoff_base=0.2)
        self.run(self.cluster.start())
        return self.cluster

    def stop(self) -> None:
        if self.cluster is not None:
            self.run(self.cluster.stop())
            self.cluster = None

    def close(self) -> None:
        self.stop()

        async def cancel_leftovers() -> None:
            # Long-lived API requests (watches) still open when the server stopped.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_leftovers(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def apply(self, manifest: str) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(["kubectl", "apply", "-f", "-"], input=manifest, env=env, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)

    def wait_for(self, what: Callable[[], Any], timeout: float = 20, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)


@pytest.fixture
def facility() -> Facility:
    return load_facility()


@pytest.fixture
def running(facility: Facility, tmp_path: Path) -> Iterator[RunningCluster]:
    rc = RunningCluster(facility, tmp_path / "state")
    rc.start()
    try:
        yield rc
    finally:
        rc.close()
