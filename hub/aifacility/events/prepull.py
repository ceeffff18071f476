"""Pre-pulling an event's image where the cluster can: a DaemonSet on the nodes of the reserved accelerator (every
node when the event reserves none), whose pods start the image and hold it, from the reservation's start (before
the event) to the end. The pods ask for almost nothing and are not queued; the kubelet keeps the image while they
run, so the participants' first sessions do not wait for a multi-gigabyte pull.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from aifacility.events.model import Event
from aifacility.facility.model import Facility

log = logging.getLogger("aifacility.events")
LABEL = "aifacility.io/event"


def name_of(event: Event) -> str:
    return f"event-prepull-{event.name}"


def daemonset(facility: Facility, event: Event) -> dict[str, Any] | None:
    """The pre-puller of `event`'s profile image; None when the event has no profile."""
    if event.profile is None:
        return None
    image = next(i.image for i in facility.images if i.name == event.profile.image)
    selector, tolerations = {}, []
    if event.reservation is not None:
        acc = facility.accelerator(event.reservation.accelerator)
        selector, tolerations = dict(acc.node_selector), [t.model_dump(exclude_none=True) for t in acc.tolerations]
    labels = {LABEL: event.name, "app.kubernetes.io/component": "event-prepull",
              "app.kubernetes.io/managed-by": "aifacility"}
    tiny = {"requests": {"cpu": "1m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
    secure = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name_of(event), "namespace": facility.namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {LABEL: event.name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": selector, "tolerations": tolerations, "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    # The pull happens for the container; `sleep` keeps the pod (and with it the image) there.
                    "containers": [{"name": "hold", "image": image, "command": ["sleep", "infinity"],
                                    "resources": tiny, "securityContext": secure}],
                },
            },
        },
    }


class PrePuller:
    def __init__(self, api: client.ApiClient | None, facility: Facility) -> None:
        self.apps = client.AppsV1Api(api) if api is not None else None
        self.facility = facility

    async def ensure(self, event: Event) -> bool:
        """Create the event's pre-puller if it is not there; whether one was created."""
        body = daemonset(self.facility, event)
        if self.apps is None or body is None:
            return False
        try:
            await self.apps.create_namespaced_daemon_set(self.facility.namespace, body)  # type: ignore[arg-type]
        except ApiException as e:
            if e.status == 409:  # there already
                return False
            raise
        log.info("event %s: pre-pulling %s", event.name, body["spec"]["template"]["spec"]["containers"][0]["image"])
        return True

    async def remove(self, event: Event) -> None:
        if self.apps is None:
            return
        try:
            await self.apps.delete_namespaced_daemon_set(name_of(event), self.facility.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
