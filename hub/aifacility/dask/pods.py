"""The Kubernetes objects of one Dask cluster: its credentials Secret, its scheduler pod and its worker pods.

- The scheduler is not queued (no Kueue label): a gated scheduler would hold its whole cluster, and it is small.
- Each worker carries its group's LocalQueue and the `dask` priority, so Kueue's plain-pod integration admits
  it under the group's quota (a worker waits gated until then), and it may only land on local flavors: workers
  must reach their scheduler, which interLink's remote sites cannot yet.
- Both run as the notebook user (1000:100, non-root, no capabilities, no service-account token), carry the labels
  the accounting reads (user, group, kind=dask) and find their TLS key and the cluster's gateway token in the
  Secret, so neither appears in a pod spec.
- Workers mount the user's home, group directories and datasets, as jobs do: they read the same files as the
  session that drives them. The scheduler mounts nothing of the user's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aifacility.facility.model import Facility
from aifacility.facility.queues import SITE_LABEL
from aifacility.jobs.manifest import (
    GROUP_LABEL,
    KIND_LABEL,
    OWNER_ANNOTATION,
    PRIORITY_LABEL,
    USER_LABEL,
    home_claim,
    user_label,
)
from aifacility.spawner.queueing import QUEUE_LABEL
from aifacility.spawner.storage import pod_volumes

MANAGED_BY = {"app.kubernetes.io/managed-by": "aifacility-dask"}
CLUSTER_LABEL = "aifacility.io/dask-cluster"
ROLE_LABEL = "aifacility.io/dask-role"  # scheduler | worker
CREDENTIALS = "/etc/dask-credentials"
TLS_CERT, TLS_KEY, TOKEN = f"{CREDENTIALS}/dask.crt", f"{CREDENTIALS}/dask.pem", f"{CREDENTIALS}/api-token"
# Each pod has an address of its own; `$(POD_IP)` in the command is expanded by the kubelet from this variable,
# so the scheduler reports an address its workers and the gateway's proxy can reach.
POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def scheduler_name(cluster: str) -> str:
    return f"dask-scheduler-{cluster}"  # cluster names are dask-gateway's 32 hex digits: 47 characters


def worker_name(worker: str) -> str:
    return f"dask-worker-{worker}"


def secret_name(cluster: str) -> str:
    return f"dask-credentials-{cluster}"


def labels(cluster: str, role: str, user: str, group: str) -> dict[str, str]:
    return {**MANAGED_BY, CLUSTER_LABEL: cluster, ROLE_LABEL: role, USER_LABEL: user_label(user),
            GROUP_LABEL: group, KIND_LABEL: "dask"}


def credentials_secret(facility: Facility, cluster: str, user: str, group: str, *, cert: bytes, key: bytes,
                       token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name(cluster), "namespace": facility.namespace,
                         "labels": labels(cluster, "credentials", user, group)},
            "stringData": {"dask.crt": cert.decode(), "dask.pem": key.decode(), "api-token": token}}


def owned_by(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An ownerReference to the scheduler pod: deleting it removes the Secret and the workers (garbage
    collector). Not `controller: true`: Kueue skips pods whose *controller* is a kind it manages (Pod is one)."""
    meta = pod["metadata"]
    return [{"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"],
             "blockOwnerDeletion": False}]


def _env(env: Mapping[str, str]) -> list[dict[str, Any]]:
    return [POD_IP_ENV, *({"name": k, "value": v} for k, v in env.items())]


def _pod(facility: Facility, name: str, lbl: dict[str, str], user: str, image: str, command: list[str],
         env: Mapping[str, str], resources: dict[str, str], cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": facility.namespace, "labels": lbl,
                     "annotations": {OWNER_ANNOTATION: user}},
        "spec": {
            # dask-gateway replaces a worker that ended; a scheduler that ended ends its cluster.
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100, "runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": lbl[ROLE_LABEL], "image": image, "command": command, "env": _env(env),
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "volumeMounts": [{"name": "dask-credentials", "mountPath": CREDENTIALS, "readOnly": True}],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
            "volumes": [{"name": "dask-credentials",
                         "secret": {"secretName": secret_name(cluster), "defaultMode": 0o440}}],
        },
    }


def scheduler_pod(facility: Facility, cluster: str, config: Mapping[str, Any], user: str, command: list[str],
                  env: Mapping[str, str]) -> dict[str, Any]:
    lbl = labels(cluster, "scheduler", user, config["group"])
    resources = {"cpu": str(config["scheduler_cores"]), "memory": str(config["scheduler_memory"])}
    return _pod(facility, scheduler_name(cluster), lbl, user, config["image"], command, env, resources, cluster)


def worker_pod(facility: Facility, cluster: str, worker: str, config: Mapping[str, Any], user: str,
               command: list[str], env: Mapping[str, str], owner: list[dict[str, Any]]) -> dict[str, Any]:
    group = config["group"]
    lbl = {**labels(cluster, "worker", user, group), QUEUE_LABEL: group, PRIORITY_LABEL: "dask"}
    resources = {"cpu": str(config["worker_cores"]), "memory": str(config["worker_memory"])}
    if config.get("accelerator_resource"):
        resources[config["accelerator_resource"]] = "1"
    pod = _pod(facility, worker_name(worker), lbl, user, config["image"], command, env, resources, cluster)
    pod["metadata"]["ownerReferences"] = owner
    volumes, mounts = pod_volumes(facility, home_claim(user), list(config.get("user_groups") or []))
    pod["spec"]["volumes"] += volumes
    pod["spec"]["containers"][0]["volumeMounts"] += mounts
    pod["spec"]["containers"][0]["workingDir"] = facility.storage.home_mount_path
    sites = [t.name for t in facility.queues.offload]
    if sites:
        # Local flavors only: Kueue skips a flavor whose node labels this affinity excludes (an offload
        # target's `site`, even one that spills), and nodes without the label (a real cluster's own) still
        # match NotIn.
        pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": SITE_LABEL, "operator": "NotIn", "values": sites}]}]}}}
    return pod
