"""The real kubectl (v1.32) against the devcluster API server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import yaml

from aifacility.devcluster import kinds

POD = """apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: main
    image: python:3.11
    command: ["sleep", "100"]
    env: [{name: A, value: "1"}]
"""

JOB = """apiVersion: batch/v1
kind: Job
metadata:
  name: train
  labels: {kueue.x-k8s.io/queue-name: user-queue}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox, command: ["true"]}]
"""

QUEUES = """apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {name: default-flavor}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: cluster-queue}
spec:
  namespaceSelector: {}
  resourceGroups:
  - coveredResources: [cpu]
    flavors:
    - name: default-flavor
      resources: [{name: cpu, nominalQuota: 9}]
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {name: user-queue, namespace: default}
spec: {clusterQueue: cluster-queue}
"""


def test_create_apply_get_table_and_formats(kubectl, tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD)
    out = kubectl("create", "-f", str(manifest))
    assert out.stdout.strip() == "pod/web created"
    assert kubectl("create", "-f", str(manifest), check=False).stderr.strip().endswith('pods "web" already exists')
    # apply on an object created without --save-config: kubectl patches and warns about the annotation only.
    applied = kubectl("apply", "-f", str(manifest))
    assert "pod/web configured" in applied.stdout
    manifest.write_text(POD.replace("{app: web}", "{app: web, tier: frontend}").replace("python:3.11", "python:3.12"))
    second = kubectl("apply", "-f", str(manifest))
    assert second.stdout.strip() == "pod/web configured"
    assert second.stderr == ""

    table = kubectl("get", "pods").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:4] == ["web", "0/1", "Pending", "0"]
    wide = kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:7] == ["IP", "NODE"]

    pod = json.loads(kubectl("get", "pod", "web", "-o", "json").stdout)
    assert pod["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    assert pod["spec"]["containers"][0]["image"] == "python:3.12"
    assert pod["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert pod["status"]["phase"] == "Pending"
    as_yaml = yaml.safe_load(kubectl("get", "pod", "web", "-o", "yaml").stdout)
    assert as_yaml["metadata"]["uid"] == pod["metadata"]["uid"]


def test_selectors_and_columns(kubectl, tmp_path):
    for name, tier in (("a", "x"), ("b", "y"), ("c", "")):
        labels = f"{{app: demo, tier: '{tier}'}}" if tier else "{app: demo}"
        kubectl("create", "-f", "-", input=POD.replace("name: web", f"name: {name}").replace("{app: web}", labels))
    names = kubectl("get", "pods", "-l", "tier in (x,y)", "-o", "name").stdout.split()
    assert names == ["pod/a", "pod/b"]
    assert kubectl("get", "pods", "-l", "app=demo,!tier", "-o", "name").stdout.split() == ["pod/c"]
    assert kubectl("get", "pods", "-l", "tier!=x", "-o", "name").stdout.split() == ["pod/b", "pod/c"]
    by_field = kubectl("get", "pods", "--field-selector", "metadata.name=b,status.phase=Pending", "-o", "name")
    assert by_field.stdout.split() == ["pod/b"]
    none = kubectl("get", "pods", "--field-selector", "status.phase=Running")
    assert "No resources found" in none.stderr
    bad = kubectl("get", "pods", "-l", "a in (", check=False)
    assert bad.returncode != 0


def test_patch_label_annotate(kubectl):
    kubectl("create", "-f", "-", input=POD)
    kubectl("patch", "pod", "web", "--type", "merge", "-p", '{"metadata":{"labels":{"merged":"yes"}}}')
    kubectl("patch", "pod", "web", "--type", "json", "-p", '[{"op":"add","path":"/metadata/labels/json","value":"1"}]')
    # strategic: the container list is merged by name, so env survives an image change
    kubectl("patch", "pod", "web", "-p", '{"spec":{"containers":[{"name":"main","image":"python:3.13"}]}}')
    kubectl("label", "pod", "web", "owner=alice")
    kubectl("annotate", "pod", "web", "note=hello")
    pod = json.loads(kubectl("get", "pod", "web", "-o", "json").stdout)
    assert pod["metadata"]["labels"] == {"app": "web", "merged": "yes", "json": "1", "owner": "alice"}
    assert pod["metadata"]["annotations"] == {"note": "hello"}
    assert pod["spec"]["containers"][0]["image"] == "python:3.13"
    assert pod["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    kubectl("label", "pod", "web", "owner-")
    assert "owner" not in json.loads(kubectl("get", "pod", "web", "-o", "json").stdout)["metadata"]["labels"]
    failed = kubectl(
        "patch", "pod", "web", "--type", "json", "-p", '[{"op":"remove","path":"/spec/nope"}]', check=False
    )
    assert failed.returncode != 0 and "could not be applied" in failed.stderr
    immutable = kubectl("patch", "pod", "web", "-p", '{"spec":{"restartPolicy":"Never"}}', check=False)
    assert "pod updates may not change fields" in immutable.stderr


def test_watch_delete_and_wait(kubectl, server):
    kubectl("create", "-f", "-", input=POD)
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    watcher = subprocess.Popen(
        ["kubectl", "get", "pods", "-w", "--request-timeout=8s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        header = watcher.stdout.readline()
        assert header.split()[:3] == ["NAME", "READY", "STATUS"]
        assert watcher.stdout.readline().split()[0] == "web"
        kubectl("label", "pod", "web", "seen=1")
        assert watcher.stdout.readline().split()[0] == "web"
    finally:
        watcher.kill()
        watcher.communicate()

    # A pod that is bound to a node is only marked; kubectl wait sees it go once the "node" removes it.
    server.call(lambda: server.store.modify(kinds.POD, "default", "web", lambda p: p["spec"].update(nodeName="n1")))
    deleted = kubectl("delete", "pod", "web", "--wait=false")
    assert deleted.stdout.strip() == 'pod "web" deleted'
    assert "Terminating" in kubectl("get", "pod", "web").stdout
    waiting = subprocess.Popen(
        ["kubectl", "wait", "--for=delete", "pod/web", "--timeout=20s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    server.call(lambda: server.store.remove(kinds.POD, "default", "web"))
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert "pod/web condition met" in out or "deleted" in out


def test_wait_for_condition_and_jsonpath(kubectl, server):
    kubectl("create", "-f", "-", input=POD)
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    waiting = subprocess.Popen(
        ["kubectl", "wait", "--for=condition=Ready", "pod/web", "--timeout=20s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    status = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    kubectl("patch", "pod", "web", "--subresource=status", "--type", "merge", "-p", json.dumps(status))
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert out.strip() == "pod/web condition met"
    jp = kubectl("wait", "--for=jsonpath={.status.phase}=Running", "pod/web", "--timeout=10s")
    assert "condition met" in jp.stdout
    assert kubectl("get", "pod", "web").stdout.splitlines()[1].split()[2] == "Running"


def test_jobs_and_kueue_objects(kubectl):
    kubectl("apply", "-f", "-", input=QUEUES)
    kubectl("apply", "-f", "-", input=QUEUES)  # idempotent: CRs get JSON merge patches
    kubectl("create", "-f", "-", input=JOB)
    jobs = kubectl("get", "jobs").stdout.splitlines()
    assert jobs[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert jobs[1].split()[:3] == ["train", "Running", "0/1"]
    job = json.loads(kubectl("get", "job", "train", "-o", "json").stdout)
    uid = job["metadata"]["uid"]
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "train"
    cq = kubectl("get", "clusterqueues").stdout.splitlines()
    assert cq[0].split()[:2] == ["NAME", "COHORT"]
    lq = kubectl("get", "localqueues").stdout.splitlines()
    assert lq[1].split()[:2] == ["user-queue", "cluster-queue"]
    kubectl("label", "clusterqueue", "cluster-queue", "team=physics")
    kubectl("patch", "localqueue", "user-queue", "--type", "merge", "-p", '{"spec":{"stopPolicy":"Hold"}}')
    assert json.loads(kubectl("get", "lq", "user-queue", "-o", "json").stdout)["spec"]["stopPolicy"] == "Hold"
    refused = kubectl("patch", "localqueue", "user-queue", "-p", '{"spec":{"stopPolicy":"None"}}', check=False)
    assert "strategic merge patch is not supported for custom resources" in refused.stderr
    bad_job = JOB.replace("restartPolicy: Never", "restartPolicy: Always").replace("name: train", "name: bad")
    rejected = kubectl("create", "-f", "-", input=bad_job, check=False)
    assert "spec.template.spec.restartPolicy" in rejected.stderr


def test_namespaces_and_errors(kubectl):
    missing = kubectl(
        "create", "-f", "-", input=POD.replace("name: web", "name: web\n  namespace: nowhere"), check=False
    )
    assert 'namespaces "nowhere" not found' in missing.stderr
    kubectl("create", "namespace", "physics")
    kubectl("create", "configmap", "settings", "-n", "physics", "--from-literal=a=1")
    kubectl("create", "secret", "generic", "token", "-n", "physics", "--from-literal=t=s3cret")
    assert kubectl("get", "cm", "-n", "physics").stdout.splitlines()[1].split()[:2] == ["settings", "1"]
    secret = kubectl("get", "secret", "token", "-n", "physics", "-o", "jsonpath={.data.t}").stdout
    assert base64.b64decode(secret) == b"s3cret"
    kubectl("create", "serviceaccount", "runner", "-n", "physics")
    assert kubectl("get", "sa", "-n", "physics", "-o", "name").stdout.split() == [
        "serviceaccount/default",
        "serviceaccount/runner",
    ]
    bad_name = kubectl("create", "namespace", "Bad_Name", check=False)
    assert 'metadata.name: Invalid value: "Bad_Name"' in bad_name.stderr
    kubectl("delete", "namespace", "physics")
    assert "not found" in kubectl("get", "namespace", "physics", check=False).stderr
    protected = kubectl("delete", "namespace", "default", check=False)
    assert "may not be deleted" in protected.stderr
    assert kubectl("get", "--raw", "/healthz").stdout == "ok"
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["minor"] == "32"
    dry = kubectl("create", "-f", "-", "--dry-run=server", "-o", "json", input=POD)
    assert json.loads(dry.stdout)["metadata"]["name"] == "web"
    assert "No resources found" in kubectl("get", "pods").stderr
    ssa = kubectl("apply", "--server-side", "-f", "-", input=POD, check=False)
    assert "server-side apply" in ssa.stderr


def test_imperative_commands_sending_protobuf(kubectl):
    # kubectl's typed clients send these as application/vnd.kubernetes.protobuf
    kubectl("create", "job", "hello", "--image=busybox", "--", "echo", "hi")
    job = json.loads(kubectl("get", "job", "hello", "-o", "json").stdout)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["echo", "hi"] and container["image"] == "busybox"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "workingDir" not in container  # Go's empty non-pointer fields are not turned into ""
    kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
    svc = json.loads(kubectl("get", "svc", "web", "-o", "json").stdout)
    assert svc["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert svc["spec"]["clusterIP"].startswith("10.96.")
    kubectl("run", "nb", "--image=busybox", "--port=8888", "-l", "app=nb")
    kubectl("expose", "pod", "nb", "--port=80", "--target-port=8888")
    assert kubectl("get", "svc", "nb", "-o", "jsonpath={.spec.selector.app}").stdout == "nb"
    bad = kubectl("create", "service", "clusterip", "1bad", "--tcp=80", check=False)
    assert "DNS-1035 label" in bad.stderr
