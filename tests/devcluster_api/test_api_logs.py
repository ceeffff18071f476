"""GET .../pods/<name>/log over the files the node agent writes, and registered per-node log providers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from aifacility.devcluster import kinds
from aifacility.devcluster.logs import LogOptions, register_log_provider


def _make_pod(k8s, name: str, containers: list[str], node: str = "node-1") -> dict:
    pod = client.CoreV1Api(k8s).create_namespaced_pod(
        "default",
        {
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": c, "image": "busybox"} for c in containers]},
        },
    )
    return pod.to_dict()


def _log_dir(server, pod: dict) -> Path:
    d = server.state_dir / "pods" / "default" / f"{pod['metadata']['name']}_{pod['metadata']['uid']}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_logs_options(k8s, server, kubectl):
    pod = _make_pod(k8s, "nb", ["main"])
    d = _log_dir(server, pod)
    (d / "main.log").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    (d / "main.log.1").write_text("from the previous run\n")
    core = client.CoreV1Api(k8s)
    assert core.read_namespaced_pod_log("nb", "default").splitlines()[0] == "line 1"
    assert core.read_namespaced_pod_log("nb", "default", tail_lines=2) == "line 9\nline 10\n"
    assert core.read_namespaced_pod_log("nb", "default", limit_bytes=8) == "line 1\nl"
    assert core.read_namespaced_pod_log("nb", "default", previous=True) == "from the previous run\n"
    assert kubectl("logs", "nb", "--tail=1").stdout == "line 10\n"


def test_cri_lines_timestamps_and_since(k8s, server):
    pod = _make_pod(k8s, "cri", ["main"])
    d = _log_dir(server, pod)
    now = time.time()
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(now - 3600))
    new = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(now))
    (d / "main.log").write_text(f"{old} stdout F an hour ago\n{new} stderr F just now\n")
    core = client.CoreV1Api(k8s)
    assert core.read_namespaced_pod_log("cri", "default") == "an hour ago\njust now\n"
    assert core.read_namespaced_pod_log("cri", "default", since_seconds=60) == "just now\n"
    assert core.read_namespaced_pod_log("cri", "default", timestamps=True).splitlines()[1] == f"{new} just now"


def test_several_containers_need_a_name(k8s, server, kubectl):
    pod = _make_pod(k8s, "multi", ["main", "sidecar"])
    d = _log_dir(server, pod)
    (d / "sidecar.log").write_text("from the sidecar\n")
    # kubectl picks the first container itself; the API answers the bare request with Kubernetes' message.
    assert "Defaulted container" in kubectl("logs", "multi").stderr
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(k8s).read_namespaced_pod_log("multi", "default")
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == (
        "a container name must be specified for pod multi, choose one of: [main sidecar]"
    )
    assert kubectl("logs", "multi", "-c", "sidecar").stdout == "from the sidecar\n"
    wrong = kubectl("logs", "multi", "-c", "nope", check=False)
    assert "container nope is not valid for pod multi" in wrong.stderr


def test_follow_streams_until_the_container_ends(k8s, server):
    pod = _make_pod(k8s, "follow", ["main"])
    log = _log_dir(server, pod) / "main.log"
    log.write_text("first\n")
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    follower = subprocess.Popen(
        ["kubectl", "logs", "-f", "follow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"
        with log.open("a") as f:
            f.write("second\n")
        assert follower.stdout.readline() == "second\n"
        with log.open("a") as f:
            f.write("last words\n")
        terminated = {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "main",
                        "ready": False,
                        "restartCount": 0,
                        "image": "busybox",
                        "imageID": "",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }
                ],
            }
        }
        client.CoreV1Api(k8s).patch_namespaced_pod_status("follow", "default", terminated)
        out, err = follower.communicate(timeout=15)
        assert follower.returncode == 0, err
        assert out == "last words\n"
    finally:
        follower.kill()


class _RemoteLogs:
    """A provider like the interLink one: logs come from elsewhere, not from the agent's files."""

    async def stream(self, pod: dict, container: str, opts: LogOptions) -> AsyncIterator[bytes]:
        yield f"remote {pod['metadata']['name']}/{container} tail={opts.tail_lines}\n".encode()


def test_registered_provider_serves_its_node(k8s, server):
    register_log_provider(server.logs, "vk-slurm", _RemoteLogs())
    _make_pod(k8s, "offloaded", ["job"], node="vk-slurm")
    core = client.CoreV1Api(k8s)
    assert core.read_namespaced_pod_log("offloaded", "default", tail_lines=5) == "remote offloaded/job tail=5\n"
    # pods on other nodes still come from the files
    assert server.call(lambda: server.store.get(kinds.POD, "default", "offloaded"))["spec"]["nodeName"] == "vk-slurm"


def test_logs_that_cannot_exist_yet(k8s, server):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "pending"}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    )
    with pytest.raises(ApiException) as unscheduled:
        core.read_namespaced_pod_log("pending", "default")
    assert unscheduled.value.status == 400
    assert json.loads(unscheduled.value.body)["message"] == "pod pending does not have a host assigned"
    _make_pod(k8s, "starting", ["main"])
    core.patch_namespaced_pod_status(
        "starting",
        "default",
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "main",
                        "ready": False,
                        "restartCount": 0,
                        "image": "busybox",
                        "imageID": "",
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                ]
            }
        },
    )
    with pytest.raises(ApiException) as waiting:
        core.read_namespaced_pod_log("starting", "default")
    assert json.loads(waiting.value.body)["message"] == (
        'container "main" in pod "starting" is waiting to start: ContainerCreating'
    )
    with pytest.raises(ApiException) as previous:
        core.read_namespaced_pod_log("starting", "default", previous=True)
    message = json.loads(previous.value.body)["message"]
    assert message == 'previous terminated container "main" in pod "starting" not found'
