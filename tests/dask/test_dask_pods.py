"""The pods of a Dask cluster: what Kueue, the accounting and the Pod Security rules read on them."""

from __future__ import annotations

from typing import Any

from aifacility.dask import pods
from aifacility.facility import load_facility

FAC = load_facility()
CLUSTER = "0123456789abcdef0123456789abcdef"
CONFIG = {"group": "physics", "image": "img:1", "scheduler_cores": 1, "scheduler_memory": 2**31,
          "worker_cores": 2, "worker_memory": 2**33, "accelerator_resource": "", "user_groups": ["physics"]}
OWNER = [{"apiVersion": "v1", "kind": "Pod", "name": "dask-scheduler-x", "uid": "u1", "blockOwnerDeletion": False}]


def worker(**config: Any) -> dict[str, Any]:
    return pods.worker_pod(FAC, CLUSTER, "w" * 32, {**CONFIG, **config}, "Alice.Smith@example.org",
                           ["dask", "worker", "tls://10.200.0.5:8786"], {"A": "1"}, OWNER)


def scheduler() -> dict[str, Any]:
    return pods.scheduler_pod(FAC, CLUSTER, CONFIG, "alice", ["dask", "scheduler"], {"A": "1"})


def test_workers_are_queued_in_their_group_with_the_dask_priority() -> None:
    labels = worker()["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "physics"
    assert labels["kueue.x-k8s.io/priority-class"] == "dask"


def test_the_scheduler_is_not_queued() -> None:
    labels = scheduler()["metadata"]["labels"]
    assert not any(k.startswith("kueue.x-k8s.io/") for k in labels)
    assert labels[pods.ROLE_LABEL] == "scheduler"


def test_accounting_labels_on_both() -> None:
    for pod in (worker(), scheduler()):
        labels = pod["metadata"]["labels"]
        assert labels["aifacility.io/group"] == "physics" and labels["aifacility.io/kind"] == "dask"
        assert labels["aifacility.io/user"] and labels[pods.CLUSTER_LABEL] == CLUSTER
    assert worker()["metadata"]["annotations"]["aifacility.io/owner"] == "Alice.Smith@example.org"


def test_pods_run_as_the_notebook_user_without_privileges() -> None:
    for pod in (worker(), scheduler()):
        spec = pod["spec"]
        assert spec["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["runAsGroup"] == 100
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        c = spec["containers"][0]
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        assert c["resources"]["requests"] == c["resources"]["limits"]


def test_workers_stay_on_local_flavors() -> None:
    terms = worker()["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [{"matchExpressions": [
        {"key": "aifacility.io/site", "operator": "NotIn", "values": ["hpc", "htc"]}]}]
    assert "tolerations" not in worker()["spec"]  # the interLink taint is never tolerated


def test_worker_sizes_and_one_accelerator() -> None:
    assert worker()["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "2", "memory": str(2**33)}
    gpu = worker(accelerator_resource="nvidia.com/mig-1g.10gb")["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/mig-1g.10gb"] == "1"


def test_workers_mount_the_users_storage_and_the_scheduler_only_its_credentials() -> None:
    mounts = {m["mountPath"] for m in worker()["spec"]["containers"][0]["volumeMounts"]}
    assert {"/home/jovyan", "/shared/groups/physics", pods.CREDENTIALS} <= mounts
    assert [m["mountPath"] for m in scheduler()["spec"]["containers"][0]["volumeMounts"]] == [pods.CREDENTIALS]


def test_secrets_stay_out_of_the_pod_spec_and_workers_belong_to_the_scheduler() -> None:
    secret = pods.credentials_secret(FAC, CLUSTER, "alice", "physics", cert=b"CERT", key=b"KEY", token="tok")
    assert secret["stringData"] == {"dask.crt": "CERT", "dask.pem": "KEY", "api-token": "tok"}
    w = worker()
    assert "tok" not in str(w) and "KEY" not in str(w)
    assert w["metadata"]["ownerReferences"] == OWNER and "controller" not in OWNER[0]  # Kueue still manages it
    env = {e["name"]: e for e in w["spec"]["containers"][0]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    owner = pods.owned_by({"metadata": {"name": "dask-scheduler-x", "uid": "u1"}})
    assert owner == OWNER
