"""End to end: pods applied with kubectl run on a real SLURM through the virtual node and the interLink plugin."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from vnode_helpers import VNODE, Kubectl, Plugin, squeue, until

from aifacility.devcluster import DevCluster, kinds
from aifacility_interlink.localslurm import LocalSlurm

pytestmark = pytest.mark.slurm

TOLERATION = {"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}


def offload_pod(name: str, script: str, mounts: dict[str, str] | None = None, env: list[dict[str, Any]] | None = None,
                **spec: Any) -> str:
    container: dict[str, Any] = {"name": "main", "image": "docker.io/library/busybox:1.36",
                                 "command": ["sh", "-c", script]}
    if mounts:
        container["volumeMounts"] = [{"name": k, "mountPath": v} for k, v in mounts.items()]
    if env:
        container["env"] = env
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"restartPolicy": "Never", "tolerations": [TOLERATION],
                    "nodeSelector": {"kubernetes.io/hostname": VNODE}, "containers": [container], **spec}}
    return yaml.safe_dump(pod)


async def phase(kubectl: Kubectl, name: str) -> str:
    return (await kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}")).strip()


async def node_condition(kubectl: Kubectl, type_: str) -> dict[str, Any]:
    node = await kubectl.get("node", VNODE)
    return next(c for c in node["status"]["conditions"] if c["type"] == type_)


async def test_pod_runs_on_slurm_with_logs_phase_and_job_id(cluster: DevCluster, kubectl: Kubectl,
                                                           slurm: LocalSlurm) -> None:
    await until(lambda: _ready(kubectl))
    cluster.store.create(kinds.CONFIGMAP, {"metadata": {"name": "physics", "namespace": "default"},
                                           "data": {"events": "1000"}})
    await kubectl("apply", "-f", "-", stdin=offload_pod(
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
    logs = await kubectl("logs", "reco")
    assert logs.splitlines() == ["hello from slurm", "1000", "mode=1000", "done"]
    # The batch system ran it: SLURM's own record names the pod's uid as the job name.
    info = await until(lambda: _scontrol(slurm, jid), 10)
    assert pod["metadata"]["uid"] in info
    # kubectl shows the job id and the phase the way users read them.
    columns = "custom-columns=PHASE:.status.phase,JOB:.metadata.annotations.JobID"
    table = await kubectl("get", "pod", "reco", "-o", columns, "--no-headers")
    assert table.split() == ["Succeeded", jid]


def _scontrol(slurm: LocalSlurm, jid: str) -> str:
    import subprocess

    return subprocess.run(["scontrol", "show", "job", jid], env=slurm.env(), capture_output=True, text=True,
                          check=False).stdout


async def _ready(kubectl: Kubectl) -> bool:
    return (await node_condition(kubectl, "Ready"))["status"] == "True"


async def test_kubectl_delete_cancels_the_slurm_job(cluster: DevCluster, kubectl: Kubectl,
                                                   slurm: LocalSlurm) -> None:
    await until(lambda: _ready(kubectl))
    await kubectl("apply", "-f", "-", stdin=offload_pod("long", "echo started; sleep 600"))
    await until(lambda: _is(kubectl, "long", "Running"), 120)
    jid = (await kubectl.get("pod", "long"))["metadata"]["annotations"]["JobID"]
    assert squeue(slurm, jid) == "RUNNING"
    followed = await kubectl("logs", "long", "--tail=1")
    assert followed.strip() == "started"
    await kubectl("delete", "pod", "long", "--wait=true", "--timeout=60s")
    assert not cluster.store.list(kinds.POD, "default")[0]
    await until(lambda: squeue(slurm, jid) == "", 30)


async def _is(kubectl: Kubectl, name: str, wanted: str) -> bool:
    return await phase(kubectl, name) == wanted


async def test_plugin_down_node_not_ready_pods_stay_pending(cluster: DevCluster, kubectl: Kubectl,
                                                           plugin: Plugin) -> None:
    await until(lambda: _ready(kubectl))
    node = await kubectl.get("node", VNODE)
    # Capacity from the plugin's PingResponse (SLURM's partition: the fake node's 64 CPUs and 4 GPUs).
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
    assert node["status"]["capacity"]["cpu"] not in ("0", "")
    plugin.stop()
    cond = await until(lambda: _condition_false(kubectl), 30)
    assert cond["reason"] == "InterlinkPingFailed" and plugin.url in cond["message"]
    assert (await node_condition(kubectl, "Ready"))["status"] == "False"
    await kubectl("apply", "-f", "-", stdin=offload_pod("waiting", "echo finally"))
    await until(lambda: _unschedulable(kubectl, "waiting"), 30)
    out = await kubectl("logs", "waiting", check=False)
    assert "Error from server (BadRequest): pod waiting does not have a host assigned" in out, out
    pod = await kubectl.get("pod", "waiting")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    plugin.start()
    await until(lambda: _is(kubectl, "waiting", "Succeeded"), 120)
    assert (await kubectl("logs", "waiting")).strip() == "finally"
    assert (await node_condition(kubectl, "InterlinkConnectivity"))["status"] == "True"
    # Logs the node cannot read are a Status error (kubectl exits non-zero), not a 200 with the error as text.
    plugin.stop()
    out = await kubectl("logs", "waiting", check=False)
    assert "Error from server (InternalError)" in out and "cannot be reached" in out and plugin.url in out, out


async def _condition_false(kubectl: Kubectl) -> dict[str, Any] | None:
    cond = await node_condition(kubectl, "InterlinkConnectivity")
    return cond if cond["status"] == "False" else None


async def _unschedulable(kubectl: Kubectl, name: str) -> bool:
    pod = await kubectl.get("pod", name)
    conds = pod["status"].get("conditions") or []
    return any(c["type"] == "PodScheduled" and c["status"] == "False" and "not-ready" in c.get("message", "")
               for c in conds)


async def test_a_pod_the_plugin_refuses_fails_with_provider_failed(cluster: DevCluster, kubectl: Kubectl) -> None:
    await until(lambda: _ready(kubectl))
    # The plugin allows no hostPath outside its configured prefixes (none here): a 400 from /create.
    await kubectl("apply", "-f", "-", stdin=offload_pod(
        "forbidden", "cat /data/passwd", mounts={"data": "/data"},
        volumes=[{"name": "data", "hostPath": {"path": "/etc"}}]))
    await until(lambda: _is(kubectl, "forbidden", "Failed"), 60)
    got = await kubectl.get("pod", "forbidden")
    assert got["status"]["reason"] == "ProviderFailed"
    assert "hostPath" in got["status"]["message"]
    assert got["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "ProviderFailed"
    events = await kubectl("get", "events", "--field-selector", "involvedObject.name=forbidden", "-o", "json")
    assert any(e["reason"] == "ProviderFailed" for e in json.loads(events)["items"])
