"""The provider interface of the node agent, shaped like virtual-kubelet's `PodLifecycleHandler`.

The agent (`agent/controller.py`) watches the pods bound to each node and calls the node's provider; the
provider reports status back through `notify` (virtual-kubelet's `NotifyPods`). The local process provider
(`agent/local.py`) is one implementation; interLink virtual nodes register their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Pod = dict[str, Any]
# notify(pod, status): the provider's newest status for a pod, written to the pod's status.
Notify = Callable[[Pod, dict[str, Any]], None]


class PodLifecycleHandler(Protocol):
    async def create_pod(self, pod: Pod) -> None:
        """Start the pod (returns once it is started or has failed to start; progress goes to notify)."""

    async def update_pod(self, pod: Pod) -> None:
        """The pod object changed (labels, annotations, ...); containers are not restarted."""

    async def delete_pod(self, pod: Pod) -> None:
        """Stop the pod's containers within `metadata.deletionGracePeriodSeconds`; returns when they are gone."""

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        """The pod as the provider knows it (None when it does not run it)."""

    async def get_pod_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod's current status (None when unknown)."""

    async def get_pods(self) -> list[Pod]:
        """Every pod the provider runs."""

    async def shutdown(self) -> None:
        """Stop everything (the cluster is stopping); nothing may be left running."""
