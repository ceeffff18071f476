"""`kubectl exec` through the real API server into pods run by the node agent: the API server proxies kubectl's
WebSocket (v5.channel.k8s.io) to the node's kubelet endpoint, which runs the command in the container's sandbox."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import ssl
import struct
import subprocess
import termios
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from aifacility.embedded.controlplane import build
from support.controlplane import Cluster

NS = "aifacility"


def _pod(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "restartPolicy": "Never", "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 1,
                     "securityContext": {"runAsUser": 1000, "runAsGroup": 100},
                     "containers": [{"name": "main", "image": "python:3.12", "workingDir": "/work-here",
                                     "env": [{"name": "GREETING", "value": "hello from the container"}],
                                     "command": ["sh", "-c", "echo written by the container > marker; "
                                                 "exec sleep 3600"],
                                     "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
                                     "volumeMounts": [{"name": "w", "mountPath": "/work-here"}]}],
                     "volumes": [{"name": "w", "emptyDir": {}}]}}


@pytest.fixture
def pods(cluster: Cluster) -> dict[str, str]:
    """Two running pods on two nodes (node name -> pod name), made once in the shared cluster."""
    placed = {"cpu-01": "exec-a", "cpu-02": "exec-b"}
    if cluster.kubectl("get", "pod", "-n", NS, *placed.values(), check=False).returncode != 0:
        cluster.apply(*(_pod(name, node) for node, name in placed.items()))
    for name in placed.values():
        cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", f"pod/{name}", "--timeout=90s")
    return placed


def _exec(cluster: Cluster, pod: str, *command: str, flags: tuple[str, ...] = (),
          input: str | None = None) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("exec", "-n", NS, *flags, pod, "--", *command, input=input, check=False)


def test_exec_runs_in_the_container_as_it_runs(cluster: Cluster, pods: dict[str, str]) -> None:
    out = _exec(cluster, "exec-a", "sh", "-c", 'echo "$GREETING"; hostname; id -u; id -g; pwd; cat marker')
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello from the container", "exec-a", "1000", "100", "/work-here",
                                       "written by the container"]


def test_exit_codes_propagate(cluster: Cluster, pods: dict[str, str]) -> None:
    out = _exec(cluster, "exec-a", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert out.returncode == 3, out.stderr
    assert out.stdout == "out\n"
    assert "err\n" in out.stderr and "command terminated with exit code 3" in out.stderr
    assert _exec(cluster, "exec-a", "true").returncode == 0
    assert _exec(cluster, "exec-a", "false").returncode == 1


def test_a_missing_command_is_an_error_as_the_runtime_reports_it(cluster: Cluster, pods: dict[str, str]) -> None:
    out = _exec(cluster, "exec-a", "no-such-command", "x")
    assert out.returncode == 1
    assert 'exec: "no-such-command": executable file not found in $PATH' in out.stderr
    assert "Internal error occurred: error executing command in container" in out.stderr
    missing = _exec(cluster, "exec-a", "/no/such/file")
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
    # Run by a shell, the shell's own semantics: 127 not found, 126 not executable.
    assert _exec(cluster, "exec-a", "sh", "-c", "no-such-command").returncode == 127
    assert _exec(cluster, "exec-a", "sh", "-c", "/tmp").returncode == 126


def test_stdin_reaches_the_command_and_its_end_ends_it(cluster: Cluster, pods: dict[str, str]) -> None:
    text = "".join(f"line {i}\n" for i in range(2000))
    out = _exec(cluster, "exec-a", "cat", flags=("-i",), input=text)
    assert out.returncode == 0, out.stderr
    assert out.stdout == text
    counted = _exec(cluster, "exec-a", "sh", "-c", "wc -l; exit 5", flags=("-i",), input="a\nb\n")
    assert (counted.returncode, counted.stdout.strip()) == (5, "2")


def test_exec_into_a_pod_on_another_node(cluster: Cluster, pods: dict[str, str]) -> None:
    nodes = {cluster.get("pod", "-n", NS, name)["spec"]["nodeName"] for name in pods.values()}
    assert nodes == {"cpu-01", "cpu-02"}
    out = _exec(cluster, "exec-b", "sh", "-c", "hostname; cat marker")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["exec-b", "written by the container"]


def test_a_terminal_with_its_size(cluster: Cluster, pods: dict[str, str]) -> None:
    """`kubectl exec -it`: the command gets a terminal of kubectl's size, and its output comes back."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl on a terminal of 33 rows and 101 columns
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.execv(str(build.binary("kubectl")), ["kubectl", f"--kubeconfig={cluster.kubeconfig}", "exec", "-it",
                                                "-n", NS, "exec-a", "--", "sh", "-c",
                                                "test -t 0 && echo on-a-tty; stty size; exit 4"])
    output = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = output.decode(errors="replace")
    assert "on-a-tty" in text and "33 101" in text, text
    assert os.waitstatus_to_exitcode(status) == 4, text


def _kubelet_endpoint(cluster: Cluster, node: str) -> str:
    status = cluster.get("node", node)["status"]
    address = next(a["address"] for a in status["addresses"] if a["type"] == "InternalIP")
    return f"{address}:{status['daemonEndpoints']['kubeletEndpoint']['Port']}"


def test_only_the_api_server_may_call_the_kubelet_exec_endpoint(cluster: Cluster, pods: dict[str, str]) -> None:
    uid = cluster.get("pod", "-n", NS, "exec-a")["metadata"]["uid"]
    url = (f"https://{_kubelet_endpoint(cluster, 'cpu-01')}/exec/{NS}/exec-a/{uid}/main"
           "?command=id&output=1&error=1")
    pki = cluster.embedded.plane.pki
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "v5.channel.k8s.io"}
    anonymous = ssl.create_default_context(cafile=str(cluster.embedded.plane.ca))
    admin = ssl.create_default_context(cafile=str(cluster.embedded.plane.ca))
    admin.load_cert_chain(str(pki.pair("admin").cert), str(pki.pair("admin").key))  # cluster-admin, not the API server
    for ctx in (anonymous, admin):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10, context=ctx)
        assert refused.value.code == 403
    # Through the API server, a user without `create pods/exec` is refused as well.
    forbidden = cluster.kubectl("exec", "-n", NS, "exec-a", "--as=someone", "--", "id", check=False)
    assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr.lower()


def test_the_node_declares_websocket_exec(cluster: Cluster) -> None:
    status = cluster.get("node", "cpu-01")["status"]
    assert "ExtendWebSocketsToKubelet" in status.get("declaredFeatures", []), json.dumps(status)[:500]
