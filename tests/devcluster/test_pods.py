"""A real DevCluster driven with kubectl: pods run as sandboxed processes with their env, volumes and logs."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from aifacility.devcluster import kinds

if TYPE_CHECKING:
    from conftest import RunningCluster

CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {key: hello-from-configmap}
"""

ENV_POD = """
apiVersion: v1
kind: Pod
metadata: {name: envpod, labels: {app: demo}}
spec:
  restartPolicy: Never
  initContainers:
  - {name: init, image: busybox, command: [sh, -c, 'echo init-ran > /data/init.txt'],
     volumeMounts: [{name: data, mountPath: /data}]}
  containers:
  - name: main
    image: busybox
    command: [sh, -c]
    args:
    - >-
      echo name=$POD_NAME ip=$POD_IP home=$HOME; cat /etc/cfg/key; echo; ls /data;
      echo to-stderr >&2; echo "$(GREETING)"
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: GREETING, value: "hi $(POD_NAME)"}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg, readOnly: true}
    - {name: data, mountPath: /data}
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: data, emptyDir: {}}
"""


def test_pod_env_volumes_logs_and_status(running: RunningCluster) -> None:
    running.apply(CONFIGMAP)
    running.apply(ENV_POD)
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/envpod", "--timeout=30s")
    pod = running.get("pod", "envpod")
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1"
    assert pod["status"]["hostIP"] == "127.1.0.1" or pod["status"]["hostIP"].startswith("127.1.")
    logs = running.kubectl("logs", "envpod").stdout.splitlines()
    assert logs[0] == f"name=envpod ip={ip} home=/root"
    assert "hello-from-configmap" in logs
    assert "init.txt" in logs and "to-stderr" in logs
    # The expansion is Kubernetes': $(GREETING) is resolved by the kubelet before the shell runs.
    assert "hi envpod" in logs
    main = pod["status"]["containerStatuses"][0]
    assert main["state"]["terminated"]["exitCode"] == 0 and main["state"]["terminated"]["reason"] == "Completed"
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["PodScheduled"]["status"] == "True"
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "PodCompleted"
    events = json.loads(running.kubectl("get", "events", "--field-selector", "involvedObject.name=envpod",
                                        "-o", "json").stdout)["items"]
    reasons = {e["reason"] for e in events}
    assert {"Scheduled", "Created", "Started"} <= reasons
    scheduled = next(e for e in events if e["reason"] == "Scheduled")
    assert scheduled["message"].startswith("Successfully assigned default/envpod to ")
    assert scheduled["source"]["component"] == "default-scheduler" and scheduled["count"] == 1


HTTP_POD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: python
    command: [python, -m, http.server, --bind, $(POD_IP), "8765"]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    ports: [{name: http, containerPort: 8765}]
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 10}
"""


def _pod_processes(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and "bwrap" not in cmd:
            out.append(p)
    return out


def test_http_server_on_its_pod_ip_and_delete_stops_it(running: RunningCluster) -> None:
    running.apply(HTTP_POD)
    running.kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=30s")
    ip = running.get("pod", "web")["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8765/", timeout=5) as resp:
        assert resp.status == 200
    assert _pod_processes("http.server --bind")
    running.kubectl("delete", "pod", "web", "--timeout=30s")
    assert running.kubectl("get", "pod", "web", check=False).returncode != 0
    running.wait_for(lambda: not _pod_processes("http.server --bind"), timeout=10)


def test_restart_policy_and_missing_command(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: main, image: x, command: [sh, -c, 'test -f /data/second && exit 0; touch /data/second; exit 3'],
     volumeMounts: [{name: data, mountPath: /data}]}
  volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: nocommand}
spec:
  containers:
  - {name: main, image: jupyter/base-notebook}
---
apiVersion: v1
kind: Pod
metadata: {name: badinit}
spec:
  restartPolicy: Never
  initContainers:
  - {name: fails, image: x, command: [sh, -c, 'exit 7']}
  - {name: never, image: x, command: [sh, -c, 'exit 0']}
  containers:
  - {name: main, image: x, command: [sh, -c, 'exit 0']}
""")
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/flaky", "--timeout=30s")
    flaky = running.get("pod", "flaky")["status"]["containerStatuses"][0]
    assert flaky["restartCount"] == 1
    assert flaky["lastState"]["terminated"]["exitCode"] == 3
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Failed", "pod/badinit", "--timeout=30s")
    badinit = running.get("pod", "badinit")["status"]
    assert badinit["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 7
    assert "waiting" in badinit["initContainerStatuses"][1]["state"]  # fail fast: never started

    def waiting_reason() -> str:
        statuses = running.get("pod", "nocommand")["status"].get("containerStatuses") or [{}]
        return str(statuses[0].get("state", {}).get("waiting", {}).get("reason", ""))

    running.wait_for(lambda: waiting_reason() == "CreateContainerError")
    message = running.get("pod", "nocommand")["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "has no command" in message


VOLUMES_POD = """
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cr3t}
---
apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {team: physics}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: x
    command: [sh, -c]
    args:
    - >-
      cat /secrets/token; echo; cat /info/labels; echo; cat /projected/name; echo; cat /projected/tok; echo;
      echo shared > /shared/group/file; cat /sub/only.txt; ls /dev/shm >/dev/null && echo shm;
      stat -c %a /secrets/token
    volumeMounts:
    - {name: creds, mountPath: /secrets}
    - {name: info, mountPath: /info}
    - {name: proj, mountPath: /projected}
    - {name: nfs, mountPath: /shared/group}
    - {name: nfs, mountPath: /sub, subPath: inner}
    - {name: shm, mountPath: /dev/shm}
  volumes:
  - {name: creds, secret: {secretName: creds, defaultMode: 0400}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - name: proj
    projected:
      sources:
      - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
      - secret: {name: creds, items: [{key: token, path: tok}]}
  - {name: nfs, nfs: {server: fs.example.org, path: /export/groups/physics}}
  - {name: shm, emptyDir: {medium: Memory, sizeLimit: 1Gi}}
"""


def test_volume_kinds(running: RunningCluster) -> None:
    assert running.cluster is not None
    inner = running.cluster.state_dir / "nfs" / "fs.example.org" / "export" / "groups" / "physics" / "inner"
    inner.mkdir(parents=True)
    (inner / "only.txt").write_text("from-subpath\n")
    running.apply(VOLUMES_POD)
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/vols", "--timeout=30s")
    assert running.kubectl("logs", "vols").stdout.splitlines() == [
        "s3cr3t", 'team="physics"', "vols", "s3cr3t", "from-subpath", "shm", "400"]
    # NFS data lives outside the pod, so it stays when the pod goes.
    assert (inner.parent / "file").read_text() == "shared\n"


def test_exec_and_tcp_readiness_probes(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: late
    image: x
    command: [sh, -c, 'sleep 1; touch /tmp/ready; exec sleep 300']
    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}
  - name: tcp
    image: x
    command: [python, -m, http.server, --bind, $(POD_IP), "8766"]
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    readinessProbe: {tcpSocket: {port: 8766}, periodSeconds: 1}
""")
    running.wait_for(lambda: any(s["name"] == "late" and s["state"].get("running")
                                 for s in running.get("pod", "probed")["status"].get("containerStatuses", [])))
    statuses = {s["name"]: s for s in running.get("pod", "probed")["status"]["containerStatuses"]}
    assert statuses["late"]["ready"] is False
    running.kubectl("wait", "--for=condition=Ready", "pod/probed", "--timeout=30s")
    statuses = {s["name"]: s for s in running.get("pod", "probed")["status"]["containerStatuses"]}
    assert statuses["late"]["ready"] and statuses["tcp"]["ready"]


def test_sigkill_after_the_grace_period(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: x, command: [sh, -c, 'trap "" TERM; echo trapped; while true; do sleep 0.1; done']}
""")
    running.kubectl("wait", "--for=condition=Ready", "pod/stubborn", "--timeout=30s")
    running.wait_for(lambda: running.kubectl("logs", "stubborn").stdout == "trapped\n")
    assert running.cluster is not None
    store = running.cluster.store
    seen: list[dict[str, Any]] = []

    def record() -> None:
        seen.append(store.get(kinds.POD, "default", "stubborn"))

    running.kubectl("delete", "pod", "stubborn", "--wait=false")
    running.call(record)
    assert seen[0]["metadata"]["deletionTimestamp"]  # marked, not gone: the agent stops it first
    running.wait_for(lambda: running.kubectl("get", "pod", "stubborn", check=False).returncode != 0, timeout=15)
    events = json.loads(running.kubectl("get", "events", "--field-selector", "involvedObject.name=stubborn",
                                        "-o", "json").stdout)["items"]
    assert any(e["reason"] == "Killing" and e["message"] == "Stopping container main" for e in events)
    # The marker is the pod's own command text: a bare "trap" also matches CI runners' shells.
    assert not _pod_processes('echo trapped; while true')


def test_pod_active_deadline(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: bounded}
spec:
  activeDeadlineSeconds: 1
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: x, command: [sleep, "300"]}]
""")
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Failed", "pod/bounded", "--timeout=30s")
    status = running.get("pod", "bounded")["status"]
    assert status["reason"] == "DeadlineExceeded"
    # stopped by the kubelet: SIGTERM (143), or SIGKILL (137) if the deadline came before the process set up
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] in (143, 137)


def test_lifecycle_hooks(running: RunningCluster, tmp_path: Path) -> None:
    host = tmp_path / "hooks"
    host.mkdir()
    running.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: x
    command: [sh, -c, 'while ! test -f /data/post; do sleep 0.1; done; echo saw-post; exec sleep 300']
    volumeMounts: [{{name: data, mountPath: /data}}]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, 'echo post > /data/post']}}}}
      preStop: {{exec: {{command: [sh, -c, 'echo pre > /data/pre']}}}}
  volumes: [{{name: data, hostPath: {{path: {host}}}}}]
""")
    running.wait_for(lambda: running.kubectl("logs", "hooked", check=False).stdout == "saw-post\n", timeout=30)
    running.kubectl("delete", "pod", "hooked", "--timeout=30s")
    assert (host / "pre").read_text() == "pre\n"


def test_deleting_a_namespace_stops_its_pods(running: RunningCluster) -> None:
    running.kubectl("create", "namespace", "scratch")
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: inside, namespace: scratch}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: x, command: [sh, -c, 'exec sleep 3333']}]
""")
    running.kubectl("wait", "-n", "scratch", "--for=condition=Ready", "pod/inside", "--timeout=30s")
    assert _pod_processes("sleep 3333")
    running.kubectl("delete", "namespace", "scratch", "--timeout=60s")
    assert running.kubectl("get", "namespace", "scratch", check=False).returncode != 0
    assert not _pod_processes("sleep 3333")


def test_sidecar_init_container(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: withsidecar}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: side, image: x, restartPolicy: Always, command: [sh, -c, 'echo side-up > /shared/up; exec sleep 300'],
     volumeMounts: [{name: shared, mountPath: /shared}]}
  containers:
  # As on Kubernetes, the main container starts once the sidecar has *started*, not once it wrote its file.
  - {name: main, image: x, command: [sh, -c, 'while [ ! -f /shared/up ]; do sleep 0.05; done; cat /shared/up'],
     volumeMounts: [{name: shared, mountPath: /shared}]}
  volumes: [{name: shared, emptyDir: {}}]
""")
    running.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/withsidecar", "--timeout=30s")
    assert running.kubectl("logs", "withsidecar", "-c", "main").stdout == "side-up\n"
    side = running.get("pod", "withsidecar")["status"]["initContainerStatuses"][0]
    assert "terminated" in side["state"]  # stopped once the main container was done


def test_liveness_probe_restarts_the_container(running: RunningCluster) -> None:
    running.apply("""
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: x
    command: [sh, -c, 'if test -f /state/ran; then touch /state/alive; fi; touch /state/ran; exec sleep 300']
    volumeMounts: [{name: state, mountPath: /state}]
    livenessProbe: {exec: {command: [test, -f, /state/alive]}, periodSeconds: 1, failureThreshold: 2}
  volumes: [{name: state, emptyDir: {}}]
""")
    running.wait_for(lambda: (running.get("pod", "unhealthy")["status"].get("containerStatuses") or [{}])[0]
                     .get("restartCount") == 1 and running.get("pod", "unhealthy")["status"]["phase"] == "Running",
                     timeout=30)
    events = json.loads(running.kubectl("get", "events", "--field-selector", "involvedObject.name=unhealthy",
                                        "-o", "json").stdout)["items"]
    assert any(e["reason"] == "Unhealthy" and e["message"] == "Liveness probe failed" for e in events)
