"""The real control plane: versions, authentication, RBAC, Pod Security, and Kueue installed from the chart."""

from __future__ import annotations

import json
import ssl
import stat
import urllib.error
import urllib.request

import pytest

from aifacility.embedded.cluster import HUB_NAMESPACE, HUB_SERVICE_ACCOUNT
from aifacility.embedded.controlplane.versions import versions
from support.controlplane import Cluster, wait_for

NS = "aifacility"
HUB = f"system:serviceaccount:{HUB_NAMESPACE}:{HUB_SERVICE_ACCOUNT}"


def test_kubectl_reports_the_real_server_version(cluster: Cluster) -> None:
    out = cluster.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{versions().kubernetes}"' in out


def test_the_api_lists_the_real_kueue_apis(cluster: Cluster) -> None:
    groups = json.loads(cluster.kubectl("get", "--raw", "/apis").stdout)["groups"]
    names = {g["name"]: [v["version"] for v in g["versions"]] for g in groups}
    assert "v1beta2" in names["kueue.x-k8s.io"]
    # Served by Kueue's own visibility server through the aggregation layer.
    assert "v1beta2" in names["visibility.kueue.x-k8s.io"]
    crds = {c["metadata"]["name"] for c in cluster.get("crd")["items"]}
    assert {"clusterqueues.kueue.x-k8s.io", "workloads.kueue.x-k8s.io", "cohorts.kueue.x-k8s.io"} <= crds


def _raw(url: str, ca: str, token: str | None = None) -> int:
    ctx = ssl.create_default_context(cafile=ca)
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_anonymous_and_unknown_clients_are_refused(cluster: Cluster) -> None:
    plane = cluster.embedded.plane
    url = f"{plane.server}/api/v1/namespaces/{NS}/pods"
    assert _raw(url, str(plane.ca)) == 403  # anonymous: authenticated as system:anonymous, authorized for nothing
    assert _raw(url, str(plane.ca), token="not-a-token") == 401
    assert _raw(f"{plane.server}/api/v1/secrets", str(plane.ca)) == 403


def test_credentials_on_disk_are_private(cluster: Cluster) -> None:
    plane = cluster.embedded.plane
    assert stat.S_IMODE(plane.admin_kubeconfig.stat().st_mode) == 0o600
    assert stat.S_IMODE(cluster.embedded.hub_kubeconfig.stat().st_mode) == 0o600
    for key in plane.pki.dir.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


@pytest.mark.parametrize(("verb", "resource", "namespace", "allowed"), [
    ("create", "pods", NS, True),
    ("delete", "pods", NS, True),
    ("create", "persistentvolumeclaims", NS, True),
    ("list", "nodes", None, True),
    ("list", "workloads.kueue.x-k8s.io", NS, True),
    ("get", "localqueues.visibility.kueue.x-k8s.io --subresource=pendingworkloads", NS, True),
    ("create", "clusterqueues.kueue.x-k8s.io", None, False),
    ("create", "pods", "kube-system", False),
    ("list", "secrets", "kube-system", False),
    ("create", "clusterrolebindings", None, False),
    ("delete", "nodes", None, False),
])
def test_the_hub_has_the_chart_s_rbac_and_no_more(cluster: Cluster, verb: str, resource: str,
                                                    namespace: str | None, allowed: bool) -> None:
    args = ["auth", "can-i", verb, *resource.split(), f"--as={HUB}"] + (["-n", namespace] if namespace else [])
    answer = cluster.kubectl(*args, check=False).stdout.strip()
    assert answer == ("yes" if allowed else "no"), f"{verb} {resource}: {answer}"


def test_the_hub_kubeconfig_is_a_service_account_token(cluster: Cluster) -> None:
    out = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
                          kubeconfig=cluster.embedded.hub_kubeconfig).stdout
    assert out == HUB


def test_pod_security_refuses_host_paths_in_the_notebook_namespace(cluster: Cluster) -> None:
    labels = cluster.get("namespace", NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostpath", "namespace": NS},
           "spec": {"containers": [{"name": "c", "image": "busybox", "volumeMounts": [
               {"name": "h", "mountPath": "/h"}]}], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}
    proc = cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "baseline:latest"' in proc.stderr and "hostPath" in proc.stderr


def test_kueue_suspends_a_queued_job_in_the_notebook_namespace(cluster: Cluster) -> None:
    # More CPU than any quota: Kueue's webhook suspends it at creation and it is never admitted, so the
    # Job created with suspend=false must be found suspended, with a pending Workload in the group's queue.
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "suspended-by-kueue", "namespace": NS,
                        "labels": {"kueue.x-k8s.io/queue-name": "physics"}},
           "spec": {"suspend": False, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": "busybox", "command": ["true"],
                "resources": {"requests": {"cpu": "1000", "memory": "64Mi"}}}]}}}}
    cluster.apply(job)
    created = cluster.get("job", "-n", NS, "suspended-by-kueue")
    assert created["spec"]["suspend"] is True
    selector = "kueue.x-k8s.io/job-uid=" + created["metadata"]["uid"]
    # `kubectl wait -l` fails at once while nothing matches: wait for Kueue to create the Workload first.
    wait_for(lambda: cluster.get("workload", "-n", NS, "-l", selector)["items"], timeout=30,
             message="Kueue's Workload for the Job")
    cluster.kubectl("wait", "-n", NS, "--for=jsonpath={.spec.queueName}=physics", "workload", "-l", selector,
                    "--timeout=30s")
    cluster.kubectl("wait", "-n", NS, "--for=condition=QuotaReserved=false", "workload", "-l", selector,
                    "--timeout=30s")
    cluster.kubectl("delete", "job", "-n", NS, "suspended-by-kueue", "--wait=false")


def test_the_facility_queues_are_active(cluster: Cluster) -> None:
    queues = {q["metadata"]["name"]: q for q in cluster.get("clusterqueues")["items"]}
    assert {"physics", "ml"} <= set(queues)
    cluster.kubectl("wait", "--for=condition=Active", "clusterqueue/physics", "clusterqueue/ml", "--timeout=30s")
