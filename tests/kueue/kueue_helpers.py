"""Objects and queues shared by the Kueue tests (a uniquely named module: every test area has its own
conftest.py, so `from conftest import ...` could pick up another area's)."""

from __future__ import annotations

import contextlib
from typing import Any

from aifacility.devcluster.kinds import CLUSTERQUEUE, LOCALQUEUE, RESOURCEFLAVOR
from aifacility.devcluster.store import AlreadyExists, Store

NS = "team"


def pod(name: str, cpu: str = "1", queue: str = "lq", **spec: Any) -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    return {"metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"],
                                     "resources": {"requests": {"cpu": cpu}}}], **spec}}


def job(name: str, cpu: str = "1", queue: str = "lq", parallelism: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": {"kueue.x-k8s.io/queue-name": queue}},
            "spec": {"parallelism": parallelism, "suspend": False, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["true"],
                                "resources": {"requests": {"cpu": cpu}}}]}}}}


def cluster_queue(name: str, quotas: dict[str, str], *, cohort: str | None = None,
                  borrowing_limit: str | None = None, **spec: Any) -> dict[str, Any]:
    """A ClusterQueue covering cpu with the given flavor -> nominal quota, in list order."""
    flavors = []
    for flavor, nominal in quotas.items():
        res: dict[str, Any] = {"name": "cpu", "nominalQuota": nominal}
        if borrowing_limit is not None:
            res["borrowingLimit"] = borrowing_limit
        flavors.append({"name": flavor, "resources": [res]})
    body: dict[str, Any] = {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu"],
                                                                          "flavors": flavors}], **spec}
    if cohort:
        body["cohortName"] = cohort
    return {"metadata": {"name": name}, "spec": body}


def setup_queues(store: Store, quotas: dict[str, str], *, cq: str = "cq", lq: str = "lq", **kw: Any) -> None:
    """Flavors named in `quotas` (each with nodeLabels pool=<name>), a ClusterQueue and a LocalQueue to it."""
    for flavor in quotas:
        with contextlib.suppress(AlreadyExists):  # made by an earlier call for another queue
            store.create(RESOURCEFLAVOR, {"metadata": {"name": flavor}, "spec": {"nodeLabels": {"pool": flavor}}})
    store.create(CLUSTERQUEUE, cluster_queue(cq, quotas, **kw))
    store.create(LOCALQUEUE, {"metadata": {"name": lq, "namespace": NS}, "spec": {"clusterQueue": cq}})
