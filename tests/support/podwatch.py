"""Watch the notebook pods of a running facility and remember the most that ever held an extended resource.

A list taken after the fact can miss a pod that existed for a moment; a watch sees every change, so a
"never over-allocated" assertion made from it covers the whole time it ran.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

TERMINAL = ("Succeeded", "Failed")


def pod_units(pod: Any, resource: str) -> Decimal:
    """Units of `resource` the pod's containers ask for (extended resources: limits, and requests if set)."""
    total = Decimal(0)
    for c in pod.spec.containers or []:
        res = c.resources
        value = (res.limits or {}).get(resource) or (res.requests or {}).get(resource) if res else None
        if value:
            total += Decimal(str(value))
    return total


@dataclass
class PodWatch:
    """Runs in a thread from `start()` to `stop()`; `max_holders` / `max_on_node` are the peaks it saw."""

    kubeconfig: Path
    namespace: str
    resource: str
    node: str
    holders: dict[str, Decimal] = field(default_factory=dict)  # live pods asking for the resource
    on_node: dict[str, Decimal] = field(default_factory=dict)  # ... of which bound to `node`
    max_holders: int = 0
    max_on_node: Decimal = Decimal(0)
    seen: set[str] = field(default_factory=set)  # every pod that ever asked for the resource
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def start(self) -> PodWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the pod watch did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        if self.error is not None:
            raise RuntimeError(f"the pod watch failed: {self.error!r}")

    def _apply(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        units = pod_units(pod, self.resource)
        live = kind != "DELETED" and pod.status.phase not in TERMINAL and units > 0
        if units > 0:
            self.seen.add(name)
        if live:
            self.holders[name] = units
        else:
            self.holders.pop(name, None)
        if live and pod.spec.node_name == self.node:
            self.on_node[name] = units
        else:
            self.on_node.pop(name, None)
        self.max_holders = max(self.max_holders, len(self.holders))
        self.max_on_node = max(self.max_on_node, sum(self.on_node.values(), Decimal(0)))

    def _run(self) -> None:
        try:
            api = client.CoreV1Api(config.new_client_from_config(config_file=str(self.kubeconfig)))
            listing = api.list_namespaced_pod(self.namespace)
            for pod in listing.items:
                self._apply("ADDED", pod)
            version = listing.metadata.resource_version
            self._ready.set()
            while not self._stop.is_set():
                w = watch.Watch()
                # Short server-side timeouts, so that stop() is noticed; the resourceVersion chains the watches.
                for event in w.stream(api.list_namespaced_pod, self.namespace, resource_version=version,
                                      timeout_seconds=1, _request_timeout=10):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    self._apply(event["type"], pod)
        except BaseException as e:  # reported by stop(), in the test's thread
            self.error = e
            self._ready.set()
