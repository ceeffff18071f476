"""`kubectl logs` and the Python client's pod logs, served by the node agent's kubelet endpoint through the real
API server: tail, byte limits, timestamps, since, the previous run, several containers, logs that do not exist
yet, and `-f` following a container until it ends."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from support.controlplane import Cluster, wait_for

NS = "aifacility"

LOGGED = """
apiVersion: v1
kind: Pod
metadata: {name: logged}
spec:
  restartPolicy: OnFailure
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: x
    command:
    - sh
    - -c
    - >-
      if ! test -f /data/ran; then touch /data/ran; echo from the previous run; exit 1; fi;
      for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; sleep 4; echo late; exec sleep 300
    volumeMounts: [{name: data, mountPath: /data}]
  - {name: sidecar, image: x, command: [sh, -c, 'echo from the sidecar; exec sleep 300']}
  volumes: [{name: data, emptyDir: {}}]
"""


@pytest.fixture
def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))


def _message(err: pytest.ExceptionInfo[ApiException]) -> str:
    return str(json.loads(err.value.body)["message"])


def test_log_options_previous_run_and_containers(cluster: Cluster, core: client.CoreV1Api) -> None:
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=LOGGED)

    def read(**kwargs: object) -> str:
        return str(core.read_namespaced_pod_log("logged", NS, container="main", **kwargs))

    wait_for(lambda: "late" in cluster.kubectl("logs", "-n", NS, "logged", "-c", "main", check=False).stdout,
             timeout=60, message="the second run's last line")
    assert read().splitlines() == [f"line {i}" for i in range(1, 11)] + ["late"]
    assert read(tail_lines=2) == "line 10\nlate\n"
    assert read(limit_bytes=8) == "line 1\nl"
    assert read(previous=True) == "from the previous run\n"
    assert cluster.kubectl("logs", "-n", NS, "logged", "-c", "main", "--previous").stdout == "from the previous run\n"
    stamped = read(timestamps=True).splitlines()[0]
    stamp, _, text = stamped.partition(" ")
    assert text == "line 1" and stamp.endswith("Z") and "T" in stamp
    # "late" came 4 s after the ten lines: a window of 3 s holds it alone.
    assert read(since_seconds=3) == "late\n"
    assert cluster.kubectl("logs", "-n", NS, "logged", "-c", "main", "--tail=1").stdout == "late\n"

    # Two containers: kubectl picks the first itself; the API wants a name.
    assert "Defaulted container" in cluster.kubectl("logs", "-n", NS, "logged").stderr
    with pytest.raises(ApiException) as unnamed:
        core.read_namespaced_pod_log("logged", NS)
    assert unnamed.value.status == 400
    assert _message(unnamed) == "a container name must be specified for pod logged, choose one of: [main sidecar]"
    assert cluster.kubectl("logs", "-n", NS, "logged", "-c", "sidecar").stdout == "from the sidecar\n"
    wrong = cluster.kubectl("logs", "-n", NS, "logged", "-c", "nope", check=False)
    assert "container nope is not valid for pod logged" in wrong.stderr
    # The sidecar never ran before: no previous run to show.
    with pytest.raises(ApiException) as no_previous:
        core.read_namespaced_pod_log("logged", NS, container="sidecar", previous=True)
    assert no_previous.value.status == 400
    assert _message(no_previous) == 'previous terminated container "sidecar" in pod "logged" not found'
    cluster.kubectl("delete", "pod", "-n", NS, "logged", "--wait=false")


def test_logs_of_a_pod_no_node_took(cluster: Cluster, core: client.CoreV1Api) -> None:
    cluster.kubectl("apply", "-n", NS, "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: unplaced}
spec:
  automountServiceAccountToken: false
  nodeSelector: {kubernetes.io/hostname: no-such-node}
  containers: [{name: main, image: x, command: ["true"]}]
""")
    cluster.kubectl("wait", "-n", NS, "--for=condition=PodScheduled=false", "pod/unplaced", "--timeout=30s")
    # No node, so no kubelet to ask: the API server answers with no lines (not an error, since Kubernetes 1.29).
    assert not core.read_namespaced_pod_log("unplaced", NS)
    assert cluster.kubectl("logs", "-n", NS, "unplaced").stdout == ""
    cluster.kubectl("delete", "pod", "-n", NS, "unplaced", "--wait=false")


def test_follow_streams_until_the_container_ends(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-n", NS, "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: follow}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - {name: main, image: x, command: [sh, -c, 'echo first; sleep 3; echo second; sleep 2; echo last words']}
""")
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/follow", "--timeout=60s")
    follower = cluster.kubectl_popen("logs", "-f", "-n", NS, "follow")
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"
        # Written while kubectl follows: it comes through the open stream, and the stream ends with the container.
        out, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        assert out == "second\nlast words\n"
    finally:
        follower.kill()
        follower.communicate()
    assert cluster.wait_phase(NS, "follow", "Succeeded")
    cluster.kubectl("delete", "pod", "-n", NS, "follow", "--wait=false")
