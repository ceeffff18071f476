"""The node agent stopped and started again under running pods, as a node reboots: no pod process outlives it
(even killed with SIGKILL), claims keep their data, a pod that restarts comes back on its address with one
restart more and its previous log, a pod that must not run twice is Failed, and the node keeps its cordon."""

from __future__ import annotations

import psutil

from support.controlplane import Cluster, wait_for

NS = "aifacility"

PVC_AND_PODS = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restart-home}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: restart-writer}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  nodeName: cpu-02
  containers:
  - {name: main, image: x, command: [sh, -c, 'echo kept > /home/jovyan/file.txt'],
     volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, persistentVolumeClaim: {claimName: restart-home}}]
---
apiVersion: v1
kind: Pod
metadata: {name: restart-server}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  nodeName: cpu-02
  containers:
  - {name: main, image: x, command: [sh, -c, 'echo started; exec sleep 3000'],
     volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, persistentVolumeClaim: {claimName: restart-home}}]
---
apiVersion: v1
kind: Pod
metadata: {name: restart-once}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  nodeName: cpu-02
  containers:
  - {name: main, image: x, command: [sleep, "3001"]}
"""


def sleepers(*seconds: str) -> list[psutil.Process]:
    """The pods' `sleep N` processes (not their sandboxes)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if len(cmd) == 2 and cmd[0] == "sleep" and cmd[1] in seconds:
            out.append(p)
    return out


def test_a_restarted_node_agent_keeps_claims_and_addresses_and_fails_pods_that_must_not_rerun(
        cluster: Cluster) -> None:
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=PVC_AND_PODS)
    cluster.wait_phase(NS, "restart-writer", "Succeeded")
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/restart-server", "pod/restart-once",
                    "--timeout=60s")
    ip_before = cluster.pod(NS, "restart-server")["status"]["podIP"]
    assert len(sleepers("3000", "3001")) == 2
    cluster.kubectl("cordon", "cpu-02")
    try:
        cluster.stop_node_agent()
        assert not sleepers("3000", "3001"), "pod processes outlived the node agent"
        cluster.start_node_agent()
        # The node registered again keeps what an admin set on it.
        assert cluster.get("node", "cpu-02")["spec"].get("unschedulable") is True
    finally:
        cluster.kubectl("uncordon", "cpu-02")

    # The running pod was started again, as after a node reboot: on its address, with its previous log.
    def restarted() -> bool:
        status = cluster.pod(NS, "restart-server")["status"]
        main = (status.get("containerStatuses") or [{}])[0]
        return main.get("restartCount") == 1 and "running" in main.get("state", {})

    wait_for(restarted, timeout=60, message="restart-server started again")
    server = cluster.pod(NS, "restart-server")
    assert server["status"]["podIP"] == ip_before
    assert server["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] == "Unknown"
    assert cluster.kubectl("logs", "-n", NS, "restart-server", "--previous").stdout == "started\n"
    # A pod that must not run twice is Failed, its container's state unknown.
    once = cluster.wait_phase(NS, "restart-once", "Failed")["status"]
    assert once["containerStatuses"][0]["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert len(sleepers("3000", "3001")) == 1
    # The claim's data survived.
    cluster.kubectl("apply", "-n", NS, "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: restart-reader}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - {name: main, image: x, command: [cat, /home/jovyan/file.txt], volumeMounts: [{name: home, mountPath: /home/jovyan}]}
  volumes: [{name: home, persistentVolumeClaim: {claimName: restart-home}}]
""")
    cluster.wait_phase(NS, "restart-reader", "Succeeded")
    assert cluster.kubectl("logs", "-n", NS, "restart-reader").stdout == "kept\n"
    cluster.kubectl("delete", "pod", "-n", NS, "restart-writer", "restart-server", "restart-once", "restart-reader",
                    "--timeout=60s")
    assert not sleepers("3000", "3001")
    cluster.kubectl("delete", "pvc", "-n", NS, "restart-home", "--wait=false")


def test_a_node_agent_killed_with_sigkill_takes_its_pods_along(cluster: Cluster) -> None:
    """bwrap's --die-with-parent: even a node agent killed without a chance to clean up leaves no pod process."""
    cluster.kubectl("apply", "-n", NS, "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: orphan}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: x, command: [sleep, "3002"]}]
""")
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/orphan", "--timeout=60s")
    assert len(sleepers("3002")) == 1
    cluster.stop_node_agent(kill=True)
    try:
        wait_for(lambda: not sleepers("3002"), timeout=5, message="the pod's process to die with the agent")
    finally:
        cluster.start_node_agent()
    # Started again with the node, one restart more.
    wait_for(lambda: (cluster.pod(NS, "orphan")["status"].get("containerStatuses") or [{}])[0].get("restartCount")
             == 1 and len(sleepers("3002")) == 1, timeout=60, message="the pod started again")
    cluster.kubectl("delete", "pod", "-n", NS, "orphan", "--timeout=60s")
    assert not sleepers("3002")
