"""End to end on the real control plane: pods applied with kubectl run on a real SLURM through the virtual node
(run by the node agent) and the interLink plugin; their logs come through the API server."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from vnode_helpers import VNODE, Kubectl, OffloadCluster, Plugin, offload_pod, squeue, until

from aifacility_interlink.localslurm import LocalSlurm

pytestmark = pytest.mark.slurm


async def phase(kubectl: Kubectl, name: str) -> str:
    return (await kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}")).strip()


async def node_condition(kubectl: Kubectl, type_: str) -> dict[str, Any]:
    node = await kubectl.get("node", VNODE)
    return next(c for c in node["status"]["conditions"] if c["type"] == type_)


async def _ready(kubectl: Kubectl) -> bool:
    """Ready, and without the not-ready taint (the virtual node registers as the node agent starts)."""
    out = await kubectl("get", "node", VNODE, "-o", "json", check=False)
    if not out.startswith("{"):
        return False
    node = json.loads(out)
    conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
    not_ready = any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints") or [])
    return conds.get("Ready") == "True" and not not_ready


async def _is(kubectl: Kubectl, name: str, wanted: str) -> bool:
    return await phase(kubectl, name) == wanted


def _scontrol(slurm: LocalSlurm, jid: str) -> str:
    return subprocess.run(["scontrol", "show", "job", jid], env=slurm.env(), capture_output=True, text=True,
                          check=False).stdout


async def test_pod_runs_on_slurm_with_logs_phase_and_job_id(cluster: OffloadCluster, kubectl: Kubectl,
                                                           slurm: LocalSlurm) -> None:
    await until(lambda: _ready(kubectl))
    await kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "physics",
                                                                                "namespace": "default"},
                         "data": {"events": "1000"}})
    await kubectl.apply(offload_pod(
        "reco", "echo hello from slurm; cat /etc/physics/events; echo; echo mode=$MODE; sleep 4; echo done",
        mounts={"cfg": "/etc/physics"},
        env=[{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "physics", "key": "events"}}}],
        volumes=[{"name": "cfg", "configMap": {"name": "physics"}}]))

    seen: list[str] = []

    async def record() -> bool:
        p = await phase(kubectl, "reco")
        if not seen or seen[-1] != p:
            seen.append(p)
        return p in ("Succeeded", "Failed")

    await until(record, 120, every=0.2)
    assert seen[-1] == "Succeeded", seen
    assert "Running" in seen, seen  # the 4 s sleep is long enough to be seen running
    pod = await kubectl.get("pod", "reco")
    jid = pod["metadata"]["annotations"]["JobID"]
    assert jid.isdigit()
    assert pod["spec"]["nodeName"] == VNODE
    [cs] = pod["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["exitCode"] == 0 and cs["ready"] is False
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodCompleted"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in pod["status"]["conditions"])
    # kubectl logs: the API server asks the virtual node's kubelet endpoint, which asks the plugin.
    logs = await kubectl("logs", "reco")
    assert logs.splitlines() == ["hello from slurm", "1000", "mode=1000", "done"]
    # The batch system ran it: SLURM's own record names the pod's uid as the job name.
    info = await until(lambda: _scontrol(slurm, jid), 10)
    assert pod["metadata"]["uid"] in info
    # kubectl shows the job id and the phase the way users read them.
    columns = "custom-columns=PHASE:.status.phase,JOB:.metadata.annotations.JobID"
    table = await kubectl("get", "pod", "reco", "-o", columns, "--no-headers")
    assert table.split() == ["Succeeded", jid]
    events = json.loads(await kubectl("get", "events", "--field-selector", "involvedObject.name=reco", "-o", "json"))
    submitted = [e for e in events["items"] if e["reason"] == "Submitted"]
    assert submitted and submitted[0]["source"] == {"component": "virtual-kubelet", "host": VNODE}
    await kubectl("delete", "pod", "reco", "--wait=true", "--timeout=60s")


async def test_kubectl_delete_cancels_the_slurm_job(cluster: OffloadCluster, kubectl: Kubectl,
                                                   slurm: LocalSlurm) -> None:
    await until(lambda: _ready(kubectl))
    await kubectl.apply(offload_pod("long", "echo started; sleep 600"))
    await until(lambda: _is(kubectl, "long", "Running"), 120)
    jid = (await kubectl.get("pod", "long"))["metadata"]["annotations"]["JobID"]
    assert squeue(slurm, jid) == "RUNNING"
    tail = await until(lambda: kubectl("logs", "long", "--tail=1"), 20)
    assert tail.strip() == "started"
    await kubectl("delete", "pod", "long", "--wait=true", "--timeout=60s")
    assert "long" not in await kubectl("get", "pods", "-o", "name")
    await until(lambda: squeue(slurm, jid) == "", 30)


async def _condition_false(kubectl: Kubectl) -> dict[str, Any] | None:
    cond = await node_condition(kubectl, "InterlinkConnectivity")
    return cond if cond["status"] == "False" else None


async def _unschedulable(kubectl: Kubectl, name: str) -> bool:
    pod = await kubectl.get("pod", name)
    conds = pod["status"].get("conditions") or []
    return any(c["type"] == "PodScheduled" and c["status"] == "False" and "untolerated taint" in c.get("message", "")
               for c in conds)


async def test_plugin_down_node_not_ready_pods_stay_pending(cluster: OffloadCluster, kubectl: Kubectl,
                                                           plugin: Plugin) -> None:
    await until(lambda: _ready(kubectl))
    node = await kubectl.get("node", VNODE)
    # Capacity from the plugin's PingResponse (SLURM's partition: the fake node's CPUs and 4 GPUs).
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
    assert node["status"]["capacity"]["cpu"] not in ("0", "")
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    # The node's Lease is renewed by the virtual kubelet, as by any kubelet.
    lease = json.loads(await kubectl("get", "lease", "-n", "kube-node-lease", VNODE, "-o", "json"))
    assert lease["spec"]["holderIdentity"] == VNODE
    plugin.stop()
    cond = await until(lambda: _condition_false(kubectl), 30)
    assert cond["reason"] == "InterlinkPingFailed" and plugin.url in cond["message"]
    assert (await node_condition(kubectl, "Ready"))["status"] == "False"
    taints = {(t["key"], t["effect"]) for t in (await kubectl.get("node", VNODE))["spec"]["taints"]}
    assert ("node.kubernetes.io/not-ready", "NoSchedule") in taints
    await kubectl.apply(offload_pod("waiting", "echo finally"))
    await until(lambda: _unschedulable(kubectl, "waiting"), 30)
    pod = await kubectl.get("pod", "waiting")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    plugin.start()
    await until(lambda: _is(kubectl, "waiting", "Succeeded"), 120)
    assert (await kubectl("logs", "waiting")).strip() == "finally"
    assert (await node_condition(kubectl, "InterlinkConnectivity"))["status"] == "True"
    # Logs the node cannot read are a Status error (kubectl exits non-zero), not a 200 with the error as text.
    plugin.stop()
    out = await kubectl("logs", "waiting", check=False)
    assert "Error from server" in out and "cannot be reached" in out and plugin.url in out, out
    plugin.start()
    await kubectl("delete", "pod", "waiting", "--wait=true", "--timeout=60s")


async def test_a_pod_the_plugin_refuses_fails_with_provider_failed(cluster: OffloadCluster,
                                                                   kubectl: Kubectl) -> None:
    await until(lambda: _ready(kubectl))
    # The plugin allows no hostPath outside its configured prefixes (none here): a 400 from /create. (The
    # default namespace enforces no Pod Security level, so the API server lets the pod in.)
    await kubectl.apply(offload_pod("forbidden", "cat /data/passwd", mounts={"data": "/data"},
                                    volumes=[{"name": "data", "hostPath": {"path": "/etc"}}]))
    await until(lambda: _is(kubectl, "forbidden", "Failed"), 60)
    got = await kubectl.get("pod", "forbidden")
    assert got["status"]["reason"] == "ProviderFailed"
    assert "hostPath" in got["status"]["message"]
    assert got["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "ProviderFailed"
    events = await kubectl("get", "events", "--field-selector", "involvedObject.name=forbidden", "-o", "json")
    assert any(e["reason"] == "ProviderFailed" for e in json.loads(events)["items"])
    await kubectl("delete", "pod", "forbidden", "--wait=true", "--timeout=60s")


async def test_kubectl_logs_of_a_refused_pod_says_it_is_terminated(cluster: OffloadCluster, kubectl: Kubectl) -> None:
    await until(lambda: _ready(kubectl))
    await kubectl.apply(offload_pod("refused", "echo never", mounts={"data": "/data"},
                                    volumes=[{"name": "data", "hostPath": {"path": "/etc"}}]))
    await until(lambda: _is(kubectl, "refused", "Failed"), 60)
    out = await kubectl("logs", "refused", check=False)
    assert 'container "main" in pod "refused" is terminated (ProviderFailed: ' in out, out
    assert "hostPath" in out and "waiting to start" not in out
    await kubectl("delete", "pod", "refused", "--wait=true", "--timeout=60s")


async def test_offloaded_pod_reads_its_service_account_volume(cluster: OffloadCluster, kubectl: Kubectl) -> None:
    """The API server's service-account admission adds the projected kube-api-access volume (token,
    kube-root-ca.crt, namespace); the offloaded pod reads it where the kubelet would mount it."""
    await until(lambda: _ready(kubectl))
    # the controller manager publishes kube-root-ca.crt into every namespace
    await until(lambda: kubectl("get", "configmap", "kube-root-ca.crt", "-o", "name", check=False), 60)
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    await kubectl.apply(offload_pod("sa-reader", f"head -n1 {sa}/ca.crt; cat {sa}/namespace; echo; "
                                                 f"cut -c1-3 {sa}/token"))
    await until(lambda: _ended(kubectl, "sa-reader"), 120)
    pod = await kubectl.get("pod", "sa-reader")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])
    # a JWT starts with the base64 of '{"' (eyJ)
    assert (await kubectl("logs", "sa-reader")).splitlines() == ["-----BEGIN CERTIFICATE-----", "default", "eyJ"]
    await kubectl("delete", "pod", "sa-reader", "--wait=true", "--timeout=60s")


async def test_readiness_probe_decides_when_the_offloaded_pod_is_ready(cluster: OffloadCluster,
                                                                      kubectl: Kubectl) -> None:
    await until(lambda: _ready(kubectl))
    manifest = offload_pod("slow-ready", "sleep 6; touch /tmp/ready; sleep 300")
    manifest["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1}
    await kubectl.apply(manifest)
    await until(lambda: _is(kubectl, "slow-ready", "Running"), 120)

    async def ready_condition() -> str:
        pod = await kubectl.get("pod", "slow-ready")
        cond = next((c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"), {})
        return str(cond.get("status"))

    assert await ready_condition() == "False"  # running, not ready yet
    await until(lambda: _ready_is_true(ready_condition), 60)
    [cs] = (await kubectl.get("pod", "slow-ready"))["status"]["containerStatuses"]
    assert cs["ready"] is True and cs["started"] is True and cs["restartCount"] == 0
    await kubectl("delete", "pod", "slow-ready", "--wait=true", "--timeout=60s")


async def _ready_is_true(check: Any) -> bool:
    return bool(await check() == "True")


async def _ended(kubectl: Kubectl, name: str) -> bool:
    return await phase(kubectl, name) in ("Succeeded", "Failed")
