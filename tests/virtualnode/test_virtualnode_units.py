"""The virtual node's pieces without a batch system: phase rules, RetrievedPodData, URLs, node status."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from aifacility.devcluster import DevCluster, kinds
from aifacility.devcluster.__main__ import main as devcluster_main
from aifacility.devcluster.agent.env import ConfigError
from aifacility.devcluster.store import Store
from aifacility.devcluster.virtualnode import plugin_urls
from aifacility.devcluster.virtualnode.node import mark_not_ready, mark_ready
from aifacility.devcluster.virtualnode.phase import pod_status
from aifacility.devcluster.virtualnode.podspec import retrieved_pod_data
from aifacility.facility import load_facility
from aifacility_interlink.contract import PingResponse

RUN = {"running": {"startedAt": "2026-11-21T05:00:00Z"}}
WAIT = {"waiting": {"reason": "SlurmPending", "message": "Priority"}}


def done(code: int) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}


def pod(init: int = 0, containers: int = 1, phase: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
                         "spec": {"initContainers": [{"name": f"i{n}", "image": "x"} for n in range(init)],
                                  "containers": [{"name": f"c{n}", "image": "x"} for n in range(containers)]}}
    if phase:
        p["status"] = {"phase": phase}
    return p


def remote(init: list[dict[str, Any]], containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "p", "UID": "u1", "namespace": "default", "JID": "7",
            "initContainers": [{"name": f"i{n}", "state": s} for n, s in enumerate(init)],
            "containers": [{"name": f"c{n}", "state": s} for n, s in enumerate(containers)]}


@pytest.mark.parametrize(("init", "containers", "phase", "reason"), [
    ([], [done(0), done(0)], "Succeeded", None),
    ([], [done(0), done(3)], "Failed", None),
    ([done(2)], [done(1)], "Failed", None),  # an init container failed, the plugin ended the rest
    ([], [RUN, done(0)], "Running", None),
    ([], [RUN, WAIT], "Running", None),
    ([RUN], [WAIT], "Pending", "Init"),
    ([done(0)], [WAIT], "Pending", None),
    ([], [WAIT], "Pending", None),
])
def test_phase_from_plugin_status(init: list[dict[str, Any]], containers: list[dict[str, Any]], phase: str,
                                  reason: str | None) -> None:
    status = pod_status(pod(len(init), len(containers)), remote(init, containers))
    assert status["phase"] == phase
    assert status["reason"] == reason
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == ("True" if phase == "Running" and all("running" in s for s in containers)
                               else "False")


def test_phase_never_goes_back() -> None:
    assert pod_status(pod(phase="Running"), remote([], [WAIT]))["phase"] == "Running"
    final = pod_status(pod(phase="Succeeded"), remote([], [RUN]))
    assert final["phase"] == "Succeeded"
    assert all(not cs["ready"] for cs in final["containerStatuses"])


def test_containers_missing_from_the_answer_are_waiting() -> None:
    status = pod_status(pod(containers=2), remote([], [RUN]))
    assert [list(cs["state"]) for cs in status["containerStatuses"]] == [["running"], ["waiting"]]


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        ("ConfigMap", "cfg"): {"metadata": {"name": "cfg", "namespace": "default", "resourceVersion": "9"},
                               "data": {"run.ini": "events=10", "mode": "fast"}},
        ("Secret", "grid"): {"metadata": {"name": "grid", "namespace": "default"},
                             "data": {"token": base64.b64encode(b"s3cr3t").decode()}},
        ("ConfigMap", "env"): {"metadata": {"name": "env"}, "data": {"A": "1", "B": "2"}},
    }


def _lookup(kind: str, name: str) -> dict[str, Any] | None:
    return _objects().get((kind, name))


def test_retrieved_pod_data_sends_each_container_only_what_it_mounts() -> None:
    p: dict[str, Any] = {"metadata": {"name": "reco", "namespace": "default", "uid": "u1", "labels": {"app": "reco"}},
         "spec": {
             "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                         {"name": "tok", "secret": {"secretName": "grid"}},
                         {"name": "sa", "projected": {"sources": [
                             {"serviceAccountToken": {"path": "token"}},
                             {"configMap": {"name": "cfg", "items": [{"key": "mode", "path": "m"}]}},
                             {"downwardAPI": {"items": [
                                 {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}},
                         {"name": "info", "downwardAPI": {"items": [
                             {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                         {"name": "scratch", "emptyDir": {}}],
             "initContainers": [{"name": "fetch", "image": "x",
                                 "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}],
             "containers": [{"name": "main", "image": "x",
                             "envFrom": [{"configMapRef": {"name": "env"}, "prefix": "X_"}],
                             "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "grid", "key": "token"}}},
                                     {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                     {"name": "BOTH", "value": "$(X_A)-$(POD)"}],
                             "volumeMounts": [{"name": "tok", "mountPath": "/grid"}, {"name": "sa", "mountPath": "/sa"},
                                              {"name": "info", "mountPath": "/info"},
                                              {"name": "scratch", "mountPath": "/scratch"}]}]}}
    data = retrieved_pod_data(p, _lookup, {"cpu": "100"}, "dev-token")
    fetch, main = data["container"]
    assert [c["metadata"]["name"] for c in fetch["configMaps"]] == ["cfg"]
    assert fetch["secrets"] == [] and fetch["projectedvolumemaps"] == []
    assert fetch["configMaps"][0] == {"metadata": {"name": "cfg", "namespace": "default"},
                                      "data": {"run.ini": "events=10", "mode": "fast"}}
    assert main["configMaps"] == [] and [s["metadata"]["name"] for s in main["secrets"]] == ["grid"]
    projected = {m["metadata"]["name"]: m["data"] for m in main["projectedvolumemaps"]}
    assert projected == {"sa": {"token": "dev-token", "m": "fast", "name": "reco"}, "info": {"labels": 'app="reco"'}}
    spec = data["pod"]["spec"]
    assert "downwardAPI" not in spec["volumes"][3] and "projected" in spec["volumes"][3]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env == {"X_A": "1", "X_B": "2", "TOKEN": "s3cr3t", "POD": "reco", "BOTH": "1-reco"}
    assert "envFrom" not in spec["containers"][0]
    assert "envFrom" in p["spec"]["containers"][0]  # the pod itself is not changed


def test_a_missing_config_map_is_named() -> None:
    p: dict[str, Any] = {"metadata": {"name": "p", "namespace": "default", "uid": "u"},
         "spec": {"volumes": [{"name": "v", "configMap": {"name": "absent"}}],
                  "containers": [{"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}
    with pytest.raises(ConfigError, match='configmap "absent" not found'):
        retrieved_pod_data(p, _lookup, {}, "t")
    p["spec"]["volumes"][0]["configMap"]["optional"] = True
    assert retrieved_pod_data(p, _lookup, {}, "t")["container"][0]["configMaps"] == []
    p["spec"]["containers"][0]["env"] = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "grid", "key": "nope"}}}]
    with pytest.raises(ConfigError, match="couldn't find key nope"):
        retrieved_pod_data(p, _lookup, {}, "t")


def test_plugin_urls() -> None:
    facility = load_facility()
    assert plugin_urls(facility, {"vk-hpc-leonardo": "http://127.0.0.1:4000"}) == {
        "vk-hpc-leonardo": "http://127.0.0.1:4000", "vk-htc-tier1": None}
    with pytest.raises(ValueError, match=r"gpu-a100-01 is not an interLink virtual node .*vk-hpc-leonardo"):
        plugin_urls(facility, {"gpu-a100-01": "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="must start with http://, https:// or unix://"):
        plugin_urls(facility, {"vk-htc-tier1": "127.0.0.1:4000"})


def test_devcluster_cli_refuses_bad_interlink_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        devcluster_main(["--state-dir", str(tmp_path), "--interlink", "vk-hpc-leonardo"])
    assert e.value.code == 2 and "is not NODE=URL" in capsys.readouterr().err
    assert devcluster_main(["--state-dir", str(tmp_path), "--interlink", "nope=http://127.0.0.1:1"]) == 2
    assert "nope is not an interLink virtual node" in capsys.readouterr().err


def _node(store: Store) -> dict[str, Any]:
    return store.get(kinds.NODE, None, "vk-hpc-leonardo")


def test_ping_sets_capacity_never_zero_and_the_plugin_taints(tmp_path: Path) -> None:
    from aifacility.devcluster.nodes import apply_nodes

    store = Store(tmp_path / "store.sqlite")
    try:
        apply_nodes(store, load_facility())
        configured = dict(_node(store)["status"]["capacity"])
        mark_not_ready(store, "vk-hpc-leonardo", "InterlinkPingFailed", "down")
        taints = {t["key"] for t in _node(store)["spec"]["taints"]}
        assert "node.kubernetes.io/not-ready" in taints and "virtual-node.interlink/no-schedule" in taints
        ping = PingResponse.model_validate({
            "status": "ok", "resources": {"cpu": "0", "memory": "512Gi", "pods": "1000",
                                          "accelerators": [{"resourceType": "nvidia.com/gpu", "available": 8}]},
            "taints": [{"key": "site", "value": "leonardo", "effect": "NoSchedule"}]})
        mark_ready(store, "vk-hpc-leonardo", ping, configured, ping.model_dump_json())
        node = _node(store)
        cap = node["status"]["capacity"]
        assert cap["cpu"] == configured["cpu"]  # a 0 from a full cluster does not drain the node
        assert (cap["memory"], cap["pods"], cap["nvidia.com/gpu"]) == ("512Gi", "1000", "8")
        assert node["status"]["allocatable"] == cap
        conds = {c["type"]: c for c in node["status"]["conditions"]}
        assert conds["Ready"]["status"] == "True" and conds["InterlinkConnectivity"]["status"] == "True"
        keys = [t["key"] for t in node["spec"]["taints"]]
        assert "node.kubernetes.io/not-ready" not in keys and "site" in keys
        assert "virtual-node.interlink/no-schedule" in keys
        # The plugin stops reporting its taint: it goes; the facility's own taint stays.
        ping.taints = []
        mark_ready(store, "vk-hpc-leonardo", ping, configured, ping.model_dump_json())
        assert [t["key"] for t in _node(store)["spec"]["taints"]] == ["virtual-node.interlink/no-schedule"]
    finally:
        store.close()


async def test_unreachable_plugin_node_not_ready_and_pods_unscheduled(tmp_path: Path) -> None:
    import asyncio

    from vnode_helpers import free_port, until

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dev = DevCluster(load_facility(), tmp_path / "state", interlink_urls={"vk-hpc-leonardo": url})
    dev.virtual_nodes.ping_interval = 0.2
    async with dev:
        def connectivity(name: str) -> dict[str, Any]:
            node = dev.store.get(kinds.NODE, None, name)
            return next(c for c in node["status"]["conditions"] if c["type"] == "InterlinkConnectivity")

        cond = await until(lambda: connectivity("vk-hpc-leonardo")["reason"] == "InterlinkPingFailed"
                           and connectivity("vk-hpc-leonardo"), 10)
        assert url in cond["message"] and "cannot be reached" in cond["message"]
        htc = connectivity("vk-htc-tier1")
        assert htc["status"] == "False" and htc["reason"] == "InterlinkNotConfigured"
        dev.store.create(kinds.POD, {"metadata": {"name": "w", "namespace": "default"}, "spec": {
            "restartPolicy": "Never", "nodeSelector": {"kubernetes.io/hostname": "vk-hpc-leonardo"},
            "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "x", "command": ["true"]}]}})

        def unschedulable() -> str:
            p = dev.store.get(kinds.POD, "default", "w")
            return next((c.get("message", "") for c in p["status"].get("conditions") or []
                         if c["type"] == "PodScheduled" and c["status"] == "False"), "")

        message = await until(unschedulable, 10)
        assert "node.kubernetes.io/not-ready" in message
        await asyncio.sleep(0.5)
        assert not dev.store.get(kinds.POD, "default", "w")["spec"].get("nodeName")
