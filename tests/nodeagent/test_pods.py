"""Pods on the node agent, through the real API: the real scheduler binds them, the node agent runs them as
sandboxed processes with their environment, volumes, probes, hooks and restarts, and reports their status and
events back, as `kubectl` shows them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import psutil

from aifacility.embedded.nodeagent.cpugroup import PodCpuGroup
from support.controlplane import Cluster, wait_for

NS = "aifacility"


def apply(cluster: Cluster, manifest: str, namespace: str = NS) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def logs(cluster: Cluster, name: str, *args: str, namespace: str = NS) -> str:
    return cluster.kubectl("logs", "-n", namespace, name, *args).stdout


def pod_processes(marker: str) -> list[psutil.Process]:
    """The processes (not their bwrap sandboxes) whose command line holds `marker`."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and "bwrap" not in cmd:
            out.append(p)
    return out


ENV_POD = """
apiVersion: v1
kind: ConfigMap
metadata: {name: envpod-cfg}
data: {key: hello-from-configmap}
---
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
      echo to-stderr >&2; echo "$(GREETING)"; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: GREETING, value: "hi $(POD_NAME)"}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg, readOnly: true}
    - {name: data, mountPath: /data}
  volumes:
  - {name: cfg, configMap: {name: envpod-cfg}}
  - {name: data, emptyDir: {}}
"""


def test_pod_env_volumes_logs_status_and_events(cluster: Cluster) -> None:
    apply(cluster, ENV_POD)
    pod = cluster.wait_phase(NS, "envpod", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    ip = pod["status"]["podIP"]
    assert ip.startswith("10.")  # on the cluster's bridge, in the pod's own network namespace
    assert pod["status"]["hostIP"].startswith("127.1.")
    lines = logs(cluster, "envpod").splitlines()
    assert lines[0] == f"name=envpod ip={ip} home=/root"
    assert "hello-from-configmap" in lines
    assert "init.txt" in lines and "to-stderr" in lines
    # The expansion is Kubernetes': $(GREETING) is resolved by the kubelet before the shell runs.
    assert "hi envpod" in lines
    # The service account's token volume the API server's admission added is there, with the namespace.
    # (stdout and stderr are two pipes: as with a CRI runtime, their lines interleave in either order)
    assert [line for line in lines if line != "to-stderr"][-1] == NS
    main = pod["status"]["containerStatuses"][0]
    assert main["state"]["terminated"]["exitCode"] == 0 and main["state"]["terminated"]["reason"] == "Completed"
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["PodScheduled"]["status"] == "True"
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "PodCompleted"
    events = wait_for(lambda: (e := cluster.events(NS, "envpod")) and
                      {"Scheduled", "Pulled", "Created", "Started"} <= {x["reason"] for x in e} and e,
                      message="the pod's events")
    scheduled = next(e for e in events if e["reason"] == "Scheduled")
    assert scheduled["message"] == f"Successfully assigned {NS}/envpod to {pod['spec']['nodeName']}"
    started = [e for e in events if e["reason"] == "Started"]
    assert {e["message"] for e in started} == {"Started container init", "Started container main"}
    assert all(e["source"] == {"component": "kubelet", "host": pod["spec"]["nodeName"]} for e in started)
    assert {e["involvedObject"].get("fieldPath") for e in started} == {"spec.initContainers{init}",
                                                                      "spec.containers{main}"}


HTTP_POD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 5
  automountServiceAccountToken: false
  containers:
  - name: main
    image: python
    command: [python, -m, http.server, --bind, $(POD_IP), "8765"]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    ports: [{name: http, containerPort: 8765}]
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 10}
"""


def test_http_server_on_its_pod_ip_and_delete_stops_it(cluster: Cluster) -> None:
    apply(cluster, HTTP_POD)
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/web", "--timeout=60s")
    ip = cluster.pod(NS, "web")["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8765/", timeout=5) as resp:
        assert resp.status == 200
    servers = pod_processes("http.server --bind")
    assert servers
    # In the pods' cpu cgroup, where the machine has a cpu controller (see cpugroup): the facility's own
    # processes keep their share of the CPU however many pods run
    group = PodCpuGroup.open()
    if group.path is not None:
        assert all(group.holds(p.pid) for p in servers), [Path(f"/proc/{p.pid}/cgroup").read_text() for p in servers]
    else:
        log = next(cluster.state_dir.rglob("node-agent*.log")).read_text()
        assert "pods compete with the facility's processes for CPU" in log
    cluster.kubectl("delete", "pod", "-n", NS, "web", "--timeout=60s")
    assert cluster.gone("pod", NS, "web")
    wait_for(lambda: not pod_processes("http.server --bind"), timeout=10, message="the server to stop")


def test_restart_policy_missing_command_and_failing_init(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  restartPolicy: OnFailure
  automountServiceAccountToken: false
  containers:
  - {name: main, image: x, command: [sh, -c, 'test -f /data/second && exit 0; touch /data/second; exit 3'],
     volumeMounts: [{name: data, mountPath: /data}]}
  volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: nocommand}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: jupyter/base-notebook}
---
apiVersion: v1
kind: Pod
metadata: {name: badinit}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  initContainers:
  - {name: fails, image: x, command: [sh, -c, 'exit 7']}
  - {name: never, image: x, command: [sh, -c, 'exit 0']}
  containers:
  - {name: main, image: x, command: [sh, -c, 'exit 0']}
""")
    flaky = cluster.wait_phase(NS, "flaky", "Succeeded")["status"]["containerStatuses"][0]
    assert flaky["restartCount"] == 1
    assert flaky["lastState"]["terminated"]["exitCode"] == 3
    assert any(e["reason"] == "BackOff" for e in cluster.events(NS, "flaky"))
    badinit = cluster.wait_phase(NS, "badinit", "Failed")["status"]
    assert badinit["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 7
    assert "waiting" in badinit["initContainerStatuses"][1]["state"]  # fail fast: never started

    def waiting() -> dict[str, str]:
        statuses = cluster.pod(NS, "nocommand")["status"].get("containerStatuses") or [{}]
        return dict(statuses[0].get("state", {}).get("waiting") or {})

    state = wait_for(lambda: (w := waiting()).get("reason") == "CreateContainerError" and w,
                     message="CreateContainerError")
    assert "has no command" in state["message"]
    cluster.kubectl("delete", "pod", "-n", NS, "flaky", "nocommand", "badinit", "--timeout=60s")


def test_an_args_only_container_runs_its_image_s_entrypoint(cluster: Cluster) -> None:
    """What a stock KubeSpawner writes: args and no command, for an image of the facility file."""
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: argsonly}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - {name: main, image: "harbor.cloud.infn.it/aifacility/notebook-ml:2026.11",
     args: [sh, -c, 'echo args-only ran under $(cat /proc/1/comm)']}
""")
    pod = cluster.wait_phase(NS, "argsonly", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    # tini, the image's entrypoint, ran the args (its warning first: in the sandbox it is not PID 1).
    assert "args-only ran under bwrap" in logs(cluster, "argsonly").splitlines()
    cluster.kubectl("delete", "pod", "-n", NS, "argsonly", "--timeout=60s")


VOLUMES_POD = """
apiVersion: v1
kind: Secret
metadata: {name: vols-creds}
stringData: {token: s3cr3t}
---
apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {team: physics}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
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
  - {name: creds, secret: {secretName: vols-creds, defaultMode: 0400}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - name: proj
    projected:
      sources:
      - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
      - secret: {name: vols-creds, items: [{key: token, path: tok}]}
  - {name: nfs, nfs: {server: fs.example.org, path: /export/groups/physics}}
  - {name: shm, emptyDir: {medium: Memory, sizeLimit: 1Gi}}
"""


def test_volume_kinds(cluster: Cluster) -> None:
    inner = cluster.embedded.plane.state_dir / "nfs" / "fs.example.org" / "export" / "groups" / "physics" / "inner"
    inner.mkdir(parents=True, exist_ok=True)
    (inner / "only.txt").write_text("from-subpath\n")
    apply(cluster, VOLUMES_POD)
    pod = cluster.wait_phase(NS, "vols", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert logs(cluster, "vols").splitlines() == [
        "s3cr3t", 'team="physics"', "vols", "s3cr3t", "from-subpath", "shm", "400"]
    # NFS data lives outside the pod, so it stays when the pod goes.
    cluster.kubectl("delete", "pod", "-n", NS, "vols", "--timeout=60s")
    assert (inner.parent / "file").read_text() == "shared\n"


def test_a_missing_secret_holds_the_container_until_it_exists(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: needs-secret}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: main
    image: x
    command: [sh, -c, 'echo token=$TOKEN']
    env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: late-secret, key: token}}}]
""")

    def waiting_reason() -> str:
        statuses = cluster.pod(NS, "needs-secret")["status"].get("containerStatuses") or [{}]
        return str(statuses[0].get("state", {}).get("waiting", {}).get("reason", ""))

    wait_for(lambda: waiting_reason() == "CreateContainerConfigError", message="CreateContainerConfigError")
    events = cluster.events(NS, "needs-secret")
    assert any(e["reason"] == "Failed" and 'secret "late-secret" not found' in e["message"] for e in events)
    # The kubelet's answer for the logs of a container that never started.
    refused = cluster.kubectl("logs", "-n", NS, "needs-secret", check=False)
    assert refused.returncode != 0
    assert ('container "main" in pod "needs-secret" is waiting to start: CreateContainerConfigError'
            in refused.stderr)
    cluster.kubectl("create", "secret", "generic", "-n", NS, "late-secret", "--from-literal=token=arrived")
    cluster.wait_phase(NS, "needs-secret", "Succeeded")
    assert logs(cluster, "needs-secret") == "token=arrived\n"
    cluster.kubectl("delete", "pod", "-n", NS, "needs-secret", "--timeout=60s")


def test_exec_and_tcp_readiness_probes(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: late
    image: x
    command: [sh, -c, 'sleep 2; touch /tmp/ready; exec sleep 300']
    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}
  - name: tcp
    image: x
    command: [python, -m, http.server, --bind, $(POD_IP), "8766"]
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    readinessProbe: {tcpSocket: {port: 8766}, periodSeconds: 1}
""")

    def statuses() -> dict[str, dict[str, object]]:
        return {s["name"]: s for s in cluster.pod(NS, "probed")["status"].get("containerStatuses") or []}

    wait_for(lambda: "running" in statuses().get("late", {}).get("state", {}), message="late running")  # type: ignore[operator]
    assert statuses()["late"]["ready"] is False
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/probed", "--timeout=60s")
    ready = statuses()
    assert ready["late"]["ready"] is True and ready["tcp"]["ready"] is True
    cluster.kubectl("delete", "pod", "-n", NS, "probed", "--wait=false")


def test_sigkill_after_the_grace_period(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  automountServiceAccountToken: false
  containers:
  - {name: main, image: x, command: [sh, -c, 'trap "" TERM; echo trapped; while true; do sleep 0.1; done']}
""")
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/stubborn", "--timeout=60s")
    wait_for(lambda: logs(cluster, "stubborn") == "trapped\n", message="the trap set")
    cluster.kubectl("delete", "pod", "-n", NS, "stubborn", "--wait=false")
    marked = cluster.kubectl("get", "pod", "-n", NS, "stubborn", "-o", "json", check=False)
    if marked.returncode == 0:  # marked, not gone: the node agent stops it first
        assert json.loads(marked.stdout)["metadata"]["deletionTimestamp"]
    wait_for(lambda: cluster.gone("pod", NS, "stubborn"), timeout=20, message="the pod gone")
    events = cluster.events(NS, "stubborn")
    assert any(e["reason"] == "Killing" and e["message"] == "Stopping container main" for e in events)
    # The marker is the pod's own command text: a bare "trap" also matches CI runners' shells.
    assert not pod_processes("echo trapped; while true")


def test_pod_active_deadline(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: bounded}
spec:
  activeDeadlineSeconds: 2
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers: [{name: main, image: x, command: [sleep, "300"]}]
""")
    status = cluster.wait_phase(NS, "bounded", "Failed")["status"]
    assert status["reason"] == "DeadlineExceeded"
    # stopped by the kubelet: SIGTERM (143), or SIGKILL (137) if the deadline came before the process set up
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] in (143, 137)
    assert any(e["reason"] == "DeadlineExceeded" for e in cluster.events(NS, "bounded"))
    cluster.kubectl("delete", "pod", "-n", NS, "bounded", "--wait=false")


def test_lifecycle_hooks(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: hooks-claim}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  terminationGracePeriodSeconds: 5
  automountServiceAccountToken: false
  containers:
  - name: main
    image: x
    command: [sh, -c, 'while ! test -f /data/post; do sleep 0.1; done; echo saw-post; exec sleep 300']
    volumeMounts: [{name: data, mountPath: /data}]
    lifecycle:
      postStart: {exec: {command: [sh, -c, 'echo post > /data/post']}}
      preStop: {exec: {command: [sh, -c, 'echo pre > /data/pre']}}
  volumes: [{name: data, persistentVolumeClaim: {claimName: hooks-claim}}]
""")
    wait_for(lambda: cluster.kubectl("logs", "-n", NS, "hooked", check=False).stdout == "saw-post\n", timeout=60,
             message="the postStart hook's file")
    claim = cluster.get("pvc", "-n", NS, "hooks-claim")
    data = Path(cluster.get("pv", claim["spec"]["volumeName"])["spec"]["hostPath"]["path"])
    cluster.kubectl("delete", "pod", "-n", NS, "hooked", "--timeout=60s")
    assert (data / "pre").read_text() == "pre\n"
    cluster.kubectl("delete", "pvc", "-n", NS, "hooks-claim", "--wait=false")


def test_deleting_a_namespace_stops_its_pods(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "nodeagent-scratch")
    # The service account controller creates the namespace's default account, which pods need.
    wait_for(lambda: not cluster.gone("serviceaccount", "nodeagent-scratch", "default"), message="the account")
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: inside}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: x, command: [sh, -c, 'exec sleep 3333']}]
""", namespace="nodeagent-scratch")
    cluster.kubectl("wait", "-n", "nodeagent-scratch", "--for=condition=Ready", "pod/inside", "--timeout=60s")
    assert pod_processes("sleep 3333"), cluster.get("pod", "-n", "nodeagent-scratch", "inside")["status"]
    cluster.kubectl("delete", "namespace", "nodeagent-scratch", "--timeout=90s")
    assert cluster.gone("namespace", "", "nodeagent-scratch")
    assert not pod_processes("sleep 3333")


def test_sidecar_init_container(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: withsidecar}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  automountServiceAccountToken: false
  initContainers:
  - {name: side, image: x, restartPolicy: Always, command: [sh, -c, 'echo side-up > /shared/up; exec sleep 300'],
     volumeMounts: [{name: shared, mountPath: /shared}]}
  containers:
  # As on Kubernetes, the main container starts once the sidecar has *started*, not once it wrote its file.
  - {name: main, image: x, command: [sh, -c, 'while [ ! -f /shared/up ]; do sleep 0.05; done; cat /shared/up'],
     volumeMounts: [{name: shared, mountPath: /shared}]}
  volumes: [{name: shared, emptyDir: {}}]
""")
    pod = cluster.wait_phase(NS, "withsidecar", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert logs(cluster, "withsidecar", "-c", "main") == "side-up\n"
    side = pod["status"]["initContainerStatuses"][0]
    assert "terminated" in side["state"]  # stopped once the main container was done
    cluster.kubectl("delete", "pod", "-n", NS, "withsidecar", "--wait=false")


def test_liveness_probe_restarts_the_container(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: main
    image: x
    command: [sh, -c, 'if test -f /state/ran; then touch /state/alive; fi; touch /state/ran; exec sleep 300']
    volumeMounts: [{name: state, mountPath: /state}]
    livenessProbe: {exec: {command: [test, -f, /state/alive]}, periodSeconds: 1, failureThreshold: 2}
  volumes: [{name: state, emptyDir: {}}]
""")

    def restarted_and_running() -> bool:
        status = cluster.pod(NS, "unhealthy")["status"]
        main = (status.get("containerStatuses") or [{}])[0]
        return main.get("restartCount") == 1 and "running" in main.get("state", {}) and status["phase"] == "Running"

    wait_for(restarted_and_running, timeout=60, message="one restart")
    events = cluster.events(NS, "unhealthy")
    assert any(e["reason"] == "Unhealthy" and e["message"] == "Liveness probe failed" for e in events)
    cluster.kubectl("delete", "pod", "-n", NS, "unhealthy", "--wait=false")


def test_run_as_user_in_a_user_namespace(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: jovyan}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsUser: 1000, runAsGroup: 100}
  containers:
  - {name: main, image: x, command: [sh, -c, 'id -u; id -g; touch /home/jovyan/x && stat -c %u /home/jovyan/x'],
     volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, emptyDir: {}}]
""")
    pod = cluster.wait_phase(NS, "jovyan", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert logs(cluster, "jovyan").split() == ["1000", "100", "1000"]
    cluster.kubectl("delete", "pod", "-n", NS, "jovyan", "--wait=false")


def test_a_pod_cannot_see_the_state_directory(cluster: Cluster) -> None:
    """The facility's credentials (the admin kubeconfig, the CA's key, other pods' files) are in the state
    directory on the same machine: a pod's sandbox hides it."""
    state = cluster.embedded.plane.state_dir
    kubeconfig = cluster.kubeconfig
    assert kubeconfig.is_relative_to(state)
    apply(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: snoop}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: main
    image: x
    command: [sh, -c, 'echo listed=$(ls -A {state} 2>/dev/null | wc -l)
                        kubeconfig=$(cat {kubeconfig} 2>/dev/null | wc -c) pods=$(ls {state}/pods 2>/dev/null | wc -l)']
""")
    pod = cluster.wait_phase(NS, "snoop", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert logs(cluster, "snoop").split() == ["listed=0", "kubeconfig=0", "pods=0"]
    cluster.kubectl("delete", "pod", "-n", NS, "snoop", "--wait=false")


def test_a_mig_slice_is_the_container_s_only_visible_device(cluster: Cluster) -> None:
    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: mig}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  containers:
  - name: main
    image: x
    command: [sh, -c, 'echo $NVIDIA_VISIBLE_DEVICES']
    # The device plugin's answer wins over the pod's own variable: a container cannot widen its devices.
    env: [{name: NVIDIA_VISIBLE_DEVICES, value: all}]
    resources: {limits: {nvidia.com/mig-1g.10gb: "1"}}
---
apiVersion: v1
kind: Pod
metadata: {name: nogpu}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers: [{name: main, image: x, command: [sh, -c, 'echo $NVIDIA_VISIBLE_DEVICES']}]
""")
    mig = cluster.wait_phase(NS, "mig", "Succeeded", "Failed")
    assert mig["spec"]["nodeName"] == "gpu-a100-01" and mig["status"]["phase"] == "Succeeded"
    devices = logs(cluster, "mig").strip()
    assert devices.startswith("MIG-") and "," not in devices
    cluster.wait_phase(NS, "nogpu", "Succeeded")
    assert logs(cluster, "nogpu") == "void\n"
    cluster.kubectl("delete", "pod", "-n", NS, "mig", "nogpu", "--wait=false")


def test_an_indexed_job_s_pods_get_their_index_and_hostname(cluster: Cluster) -> None:
    apply(cluster, """
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
      automountServiceAccountToken: false
      containers: [{name: main, image: x, command: [sh, -c, 'echo index=$JOB_COMPLETION_INDEX host=$(hostname)']}]
""")
    cluster.kubectl("wait", "-n", NS, "--for=condition=Complete", "job/indexed", "--timeout=90s")
    job = cluster.get("job", "-n", NS, "indexed")
    assert job["status"]["completedIndexes"] == "0-2" and job["status"]["succeeded"] == 3
    pods = cluster.get("pods", "-n", NS, "-l", "job-name=indexed")["items"]
    out = sorted(logs(cluster, p["metadata"]["name"]).strip() for p in pods)
    assert out == [f"index={i} host=indexed-{i}" for i in range(3)]
    cluster.kubectl("delete", "job", "-n", NS, "indexed", "--wait=false")


def test_python_clients_read_pod_status_and_events(cluster: Cluster) -> None:
    import asyncio

    import kubernetes
    import kubernetes_asyncio

    apply(cluster, """
apiVersion: v1
kind: Pod
metadata: {name: clients}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  containers: [{name: main, image: x, command: [sleep, "120"]}]
""")
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/clients", "--timeout=60s")
    api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(cluster.kubeconfig)))
    status = api.read_namespaced_pod("clients", NS).status
    assert status.phase == "Running" and status.pod_ip.startswith("10.")
    assert status.container_statuses[0].state.running.started_at is not None

    async def read_async() -> tuple[str, bool]:
        loader = kubernetes_asyncio.config.load_kube_config
        config = kubernetes_asyncio.client.Configuration()
        await loader(config_file=str(cluster.kubeconfig), client_configuration=config)
        async with kubernetes_asyncio.client.ApiClient(config) as client:
            v1 = kubernetes_asyncio.client.CoreV1Api(client)
            p = await v1.read_namespaced_pod("clients", NS)
            events = await v1.list_namespaced_event(NS, field_selector="involvedObject.name=clients")
            return p.status.phase, any(e.reason == "Started" for e in events.items)

    assert asyncio.run(read_async()) == ("Running", True)
    cluster.kubectl("delete", "pod", "-n", NS, "clients", "--wait=false")
