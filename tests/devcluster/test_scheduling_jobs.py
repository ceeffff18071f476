"""Scheduling on the demo facility's nodes, concurrency, the Job controller and the garbage collector."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Any

from aifacility.devcluster import kinds

if TYPE_CHECKING:
    from conftest import RunningCluster


def mig_pod(name: str, *, tolerate: bool = True) -> str:
    tolerations = "tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]" if tolerate else ""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  {tolerations}
  containers:
  - {{name: main, image: x, command: [sleep, "300"], resources: {{limits: {{nvidia.com/mig-1g.10gb: "1"}}}}}}
"""


def _node(running: RunningCluster, name: str) -> str:
    return str(running.get("pod", name)["spec"].get("nodeName") or "")


def _scheduled_condition(running: RunningCluster, name: str) -> dict[str, Any]:
    conds = running.get("pod", name)["status"].get("conditions") or []
    return next((c for c in conds if c["type"] == "PodScheduled"), {})


def test_mig_slices_need_the_taint_toleration_and_are_never_overcommitted(running: RunningCluster) -> None:
    running.apply(mig_pod("no-toleration", tolerate=False))
    running.apply("---".join(mig_pod(f"mig-{i}") for i in range(5)))
    running.wait_for(lambda: _scheduled_condition(running, "no-toleration").get("reason") == "Unschedulable")
    bound = running.wait_for(lambda: [i for i in range(5) if _node(running, f"mig-{i}")]
                             if len([i for i in range(5) if _node(running, f"mig-{i}")]) == 4 else None)
    assert all(_node(running, f"mig-{i}") == "gpu-a100-01" for i in bound)
    waiting = next(i for i in range(5) if i not in bound)
    cond = running.wait_for(lambda: _scheduled_condition(running, f"mig-{waiting}").get("message"))
    assert cond.startswith("0/8 nodes are available: ")
    assert "5 Insufficient nvidia.com/mig-1g.10gb" in cond
    assert "3 Preemption is not helpful for scheduling" in cond
    events = json.loads(running.kubectl("get", "events", "--field-selector",
                                        f"involvedObject.name=mig-{waiting},reason=FailedScheduling",
                                        "-o", "json").stdout)["items"]
    assert events and events[0]["type"] == "Warning" and events[0]["message"] == cond
    # A slice freed: the waiting pod is scheduled at once.
    running.kubectl("delete", "pod", f"mig-{bound[0]}", "--timeout=30s")
    running.wait_for(lambda: _node(running, f"mig-{waiting}") == "gpu-a100-01")
    assert not _node(running, "no-toleration")


def test_concurrent_creates_never_over_allocate(running: RunningCluster) -> None:
    """Twelve pods for four MIG slices created in one burst straight into the store, and through the API."""
    assert running.cluster is not None
    store = running.cluster.store

    def pod(i: int) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"burst-{i}", "namespace": "default"},
                "spec": {"tolerations": [{"operator": "Exists"}], "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": "x", "command": ["sleep", "300"],
                                         "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}]}}

    running.call(lambda: [store.create(kinds.POD, pod(i)) for i in range(6)])
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: running.apply(json.dumps(pod(i))), range(6, 12)))

    def bound() -> list[dict[str, Any]]:
        items, _ = running.call(lambda: store.list(kinds.POD, "default"))
        return [p for p in items if p["spec"].get("nodeName")]

    running.wait_for(lambda: len(bound()) == 2)
    unschedulable = running.wait_for(lambda: [
        p for p in running.call(lambda: store.list(kinds.POD, "default"))[0]
        if any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions") or [])] or None)
    assert unschedulable
    assert len(bound()) == 2  # gpu-a100-01 has two 3g.40gb slices and nothing else advertises them


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: x, command: [sh, -c, 'echo done-by $HOSTNAME; sleep 0.3']}
"""


def test_job_completes_and_gc_deletes_its_pods(running: RunningCluster) -> None:
    running.apply(JOB)
    running.kubectl("wait", "--for=condition=Complete", "job/work", "--timeout=60s")
    job = running.get("job", "work")
    assert job["status"]["succeeded"] == 3 and job["status"].get("failed", 0) == 0
    assert job["status"]["startTime"] and job["status"]["completionTime"]
    pods = json.loads(running.kubectl("get", "pods", "-l", "job-name=work", "-o", "json").stdout)["items"]
    assert len(pods) == 3
    uid = job["metadata"]["uid"]
    for p in pods:
        assert p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == uid
        assert p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "work"
        assert p["metadata"]["ownerReferences"][0]["uid"] == uid
        assert p["status"]["phase"] == "Succeeded"
    running.kubectl("delete", "job", "work")
    running.wait_for(lambda: not json.loads(running.kubectl("get", "pods", "-l", "job-name=work", "-o",
                                                            "json").stdout)["items"])


def test_job_backoff_limit_and_suspension(running: RunningCluster) -> None:
    running.apply("""
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: x, command: [sh, -c, 'exit 1']}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: held}
spec:
  suspend: true
  parallelism: 2
  completions: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: main, image: x, command: [sleep, "300"]}]
""")
    running.kubectl("wait", "--for=condition=Failed", "job/failing", "--timeout=60s")
    failing = running.get("job", "failing")
    failed = next(c for c in failing["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert failing["status"]["failed"] == 2
    running.wait_for(lambda: any(c["type"] == "Suspended" and c["status"] == "True"
                                 for c in running.get("job", "held")["status"].get("conditions") or []))
    assert not json.loads(running.kubectl("get", "pods", "-l", "job-name=held", "-o", "json").stdout)["items"]
    running.kubectl("patch", "job", "held", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    running.wait_for(lambda: running.get("job", "held")["status"].get("active") == 2)
    running.kubectl("patch", "job", "held", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    running.wait_for(lambda: not json.loads(running.kubectl("get", "pods", "-l", "job-name=held", "-o",
                                                            "json").stdout)["items"], timeout=30)
    held = running.get("job", "held")
    assert held["status"].get("active", 0) == 0 and held["status"].get("failed", 0) == 0


SLEEPY_JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: NAME}
spec:
  parallelism: 2
  completions: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: main, image: x, command: [sleep, "300"]}]
"""


def _job_pods(running: RunningCluster, job: str) -> list[dict[str, Any]]:
    items = json.loads(running.kubectl("get", "pods", "-o", "json").stdout)["items"]
    return [p for p in items if p["metadata"].get("labels", {}).get("job-name") == job]


def test_cascading_deletion_policies(running: RunningCluster) -> None:
    running.apply(SLEEPY_JOB.replace("NAME", "keep") + "---" + SLEEPY_JOB.replace("NAME", "fore"))
    running.wait_for(lambda: running.get("job", "keep")["status"].get("active") == 2
                     and running.get("job", "fore")["status"].get("active") == 2)
    running.kubectl("delete", "job", "keep", "--cascade=orphan")
    pods = _job_pods(running, "keep")
    assert len(pods) == 2
    running.wait_for(lambda: all(not p["metadata"].get("ownerReferences") for p in _job_pods(running, "keep")))
    running.kubectl("delete", "job", "fore", "--cascade=foreground", "--wait=false")
    # Foreground: the Job stays (with its finalizer) until its pods are gone, which may already be the case.
    found = running.kubectl("get", "job", "fore", "-o", "json", check=False)
    if found.returncode == 0:
        assert "foregroundDeletion" in json.loads(found.stdout)["metadata"].get("finalizers", [])
    running.wait_for(lambda: running.kubectl("get", "job", "fore", check=False).returncode != 0, timeout=30)
    assert not _job_pods(running, "fore")
    assert len(_job_pods(running, "keep")) == 2


def test_job_deadline_and_ttl(running: RunningCluster) -> None:
    running.apply("""
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: main, image: x, command: [sleep, "300"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: shortlived}
spec:
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: x, command: ["true"]}]
""")
    running.kubectl("wait", "--for=condition=Failed", "job/slow", "--timeout=30s")
    failed = next(c for c in running.get("job", "slow")["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DeadlineExceeded"
    running.wait_for(lambda: not _job_pods(running, "slow"), timeout=15)
    running.wait_for(lambda: running.kubectl("get", "job", "shortlived", check=False).returncode != 0, timeout=15)


def test_indexed_job(running: RunningCluster) -> None:
    running.apply("""
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 3
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: x, command: [sh, -c, 'echo index=$JOB_COMPLETION_INDEX host=$(hostname)']}]
""")
    running.kubectl("wait", "--for=condition=Complete", "job/indexed", "--timeout=30s")
    job = running.get("job", "indexed")
    assert job["status"]["completedIndexes"] == "0-2" and job["status"]["succeeded"] == 3
    logs = sorted(running.kubectl("logs", p["metadata"]["name"]).stdout.strip() for p in _job_pods(running, "indexed"))
    assert logs == [f"index={i} host=indexed-{i}" for i in range(3)]


def test_completed_indexes_format() -> None:
    from aifacility.devcluster.jobs import format_indexes, parse_indexes

    assert format_indexes({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"
    assert parse_indexes("0-2,4,6-7") == {0, 1, 2, 4, 6, 7}
    assert format_indexes(set()) == "" and parse_indexes("") == set()


def test_unemulated_job_features_are_refused(running: RunningCluster) -> None:
    manifest = """
apiVersion: batch/v1
kind: Job
metadata: {name: policy}
spec:
  podFailurePolicy: {rules: [{action: Ignore, onPodConditions: [{type: DisruptionTarget}]}]}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: x, command: ["true"]}]
"""
    env = {**os.environ, "KUBECONFIG": str(running.kubeconfig)}
    out = subprocess.run(["kubectl", "apply", "-f", "-"], input=manifest, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    assert "spec.podFailurePolicy: Forbidden: the development cluster's Job controller does not emulate" in out.stderr
