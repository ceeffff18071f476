"""Restarts (state and files survive, no process outlives the cluster), the Python clients, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from conftest import RunningCluster

PVC_AND_PODS = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: home}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: x, command: [sh, -c, 'echo kept > /home/jovyan/file.txt'],
     volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, persistentVolumeClaim: {claimName: home}}]
---
apiVersion: v1
kind: Pod
metadata: {name: server}
spec:
  containers:
  - {name: main, image: x, command: [sh, -c, 'echo started; exec sleep 3000'],
     volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, persistentVolumeClaim: {claimName: home}}]
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: x, command: [sleep, "3001"]}
"""


def _sleepers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd[:2] in (["sleep", "3000"], ["sleep", "3001"]):
            out.append(p)
    return out


def test_restart_keeps_claims_restarts_pods_and_leaves_no_process(running: RunningCluster) -> None:
    running.apply(PVC_AND_PODS)
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/writer", "--timeout=30s")
    running.kubectl("wait", "--for=condition=Ready", "pod/server", "pod/once", "--timeout=30s")
    assert running.get("pvc", "home")["status"]["phase"] == "Bound"
    ip_before = running.get("pod", "server")["status"]["podIP"]
    assert len(_sleepers()) == 2
    running.stop()
    assert not _sleepers(), "pod processes outlived the cluster"
    running.start()
    # The claim's data survived; the running pod was started again like after a node reboot.
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: x, command: [cat, /home/jovyan/file.txt], volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, persistentVolumeClaim: {claimName: home}}]
""")
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/reader", "--timeout=30s")
    assert running.kubectl("logs", "reader").stdout == "kept\n"
    running.kubectl("wait", "--for=condition=Ready", "pod/server", "--timeout=30s")
    server = running.get("pod", "server")
    assert server["status"]["containerStatuses"][0]["restartCount"] == 1
    assert server["status"]["podIP"] == ip_before
    assert running.kubectl("logs", "server", "--previous").stdout == "started\n"
    once = running.get("pod", "once")["status"]
    assert once["phase"] == "Failed"
    assert once["containerStatuses"][0]["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert len(_sleepers()) == 1
    running.stop()
    assert not _sleepers()


def test_python_clients_read_pod_status(running: RunningCluster) -> None:
    import kubernetes
    import kubernetes_asyncio

    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: clients, namespace: aifacility}
spec:
  containers: [{name: main, image: x, command: [sleep, "60"]}]
  terminationGracePeriodSeconds: 0
""")
    running.kubectl("wait", "-n", "aifacility", "--for=condition=Ready", "pod/clients", "--timeout=30s")
    api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(running.kubeconfig)))
    status: Any = api.read_namespaced_pod("clients", "aifacility").status
    assert status.phase == "Running" and status.pod_ip.startswith("127.")
    assert status.container_statuses[0].state.running.started_at is not None

    async def read_async() -> tuple[str, bool]:
        await kubernetes_asyncio.config.load_kube_config(config_file=str(running.kubeconfig))
        async with kubernetes_asyncio.client.ApiClient() as client:
            v1 = kubernetes_asyncio.client.CoreV1Api(client)
            p = await v1.read_namespaced_pod("clients", "aifacility")
            events = await v1.list_namespaced_event("aifacility",
                                                    field_selector="involvedObject.name=clients")
            return p.status.phase, any(e.reason == "Started" for e in events.items)

    assert asyncio.run(read_async()) == ("Running", True)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aifacility.devcluster", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_refuses_a_port_in_use_and_a_bad_facility(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _cli("--state-dir", str(tmp_path / "s"), "--listen", f"127.0.0.1:{port}")
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: the address is already in use"
    bad = tmp_path / "facility.yaml"
    bad.write_text("name: demo\nimages: []\nprofiles: []\n")
    out = _cli("--facility", str(bad), "--state-dir", str(tmp_path / "s"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith(f"error: {bad}: ")


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "aifacility.devcluster", "--state-dir", str(tmp_path / "s"),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("devcluster: API server at http://127.0.0.1:")
        assert "kubeconfig" in proc.stdout.readline()
        env = {**os.environ, "KUBECONFIG": str(tmp_path / "s" / "kubeconfig")}
        nodes = json.loads(subprocess.run(["kubectl", "get", "nodes", "-o", "json"], env=env, capture_output=True,
                                          text=True, timeout=30, check=True).stdout)["items"]
        assert len(nodes) == 8
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_of_the_cluster_takes_its_pods_along(tmp_path: Path) -> None:
    """--die-with-parent: even a cluster killed without a chance to clean up leaves no pod process behind."""
    proc = subprocess.Popen([sys.executable, "-m", "aifacility.devcluster", "--state-dir", str(tmp_path / "s"),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.readline()
        env = {**os.environ, "KUBECONFIG": str(tmp_path / "s" / "kubeconfig")}
        manifest = ("apiVersion: v1\nkind: Pod\nmetadata: {name: orphan}\nspec:\n  containers:\n"
                    "  - {name: main, image: x, command: [sleep, '3000']}\n")
        subprocess.run(["kubectl", "apply", "-f", "-"], input=manifest, env=env, check=True, capture_output=True,
                       text=True, timeout=30)
        subprocess.run(["kubectl", "wait", "--for=condition=Ready", "pod/orphan", "--timeout=30s"], env=env,
                       check=True, capture_output=True, timeout=40)
        assert len(_sleepers()) == 1
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sleepers()


def test_nodes_follow_the_facility_file(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: on-cpu-02}
spec:
  nodeName: cpu-02
  terminationGracePeriodSeconds: 0
  containers: [{name: main, image: x, command: [sleep, "3000"]}]
""")
    running.kubectl("wait", "--for=condition=Ready", "pod/on-cpu-02", "--timeout=30s")
    running.kubectl("cordon", "cpu-01")
    running.stop()
    running.facility = running.facility.model_copy(
        update={"nodes": [n for n in running.facility.nodes if n.name != "cpu-02"]})
    running.start()
    names = running.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert "cpu-02" not in names and len(names) == 7
    # The cordon survives the re-registration; the pod of the vanished node is collected.
    assert running.get("node", "cpu-01")["spec"].get("unschedulable") is True
    running.wait_for(lambda: running.kubectl("get", "pod", "on-cpu-02", check=False).returncode != 0)
    assert not _sleepers()


def test_run_as_user_in_a_user_namespace(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: jovyan}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 100}
  containers:
  - {name: main, image: x, command: [sh, -c, 'id -u; id -g; touch /home/jovyan/x && stat -c %u /home/jovyan/x'],
     volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, emptyDir: {}}]
""")
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/jovyan", "--timeout=30s")
    assert running.kubectl("logs", "jovyan").stdout.split() == ["1000", "100", "1000"]
