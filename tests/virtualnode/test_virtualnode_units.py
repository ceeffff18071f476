"""The virtual node's pieces without a cluster or a batch system: phase rules, RetrievedPodData, plugin URLs and
options, the node's status and taints from a ping, its RBAC."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from aifacility.embedded.nodeagent.__main__ import main as nodeagent_main
from aifacility.embedded.nodeagent.env import ConfigError
from aifacility.embedded.nodeagent.registration import node_object
from aifacility.embedded.virtualnode import rbac
from aifacility.embedded.virtualnode.controller import parse_interlink_options, plugin_urls
from aifacility.embedded.virtualnode.node import not_ready, plugin_taints, ready, taint_patch
from aifacility.embedded.virtualnode.phase import pod_status
from aifacility.embedded.virtualnode.podspec import retrieved_pod_data
from aifacility.facility import load_facility
from aifacility_interlink.client import TOKEN_FILE_ENV
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


def test_interlink_options() -> None:
    assert parse_interlink_options(["vk-hpc-leonardo=unix:///run/p.sock"]) == {
        "vk-hpc-leonardo": "unix:///run/p.sock"}
    with pytest.raises(ValueError, match="expected NODE=URL"):
        parse_interlink_options(["vk-hpc-leonardo"])
    with pytest.raises(ValueError, match="given twice"):
        parse_interlink_options(["a=http://x", "a=http://y"])


def test_node_agent_cli_refuses_bad_interlink_options(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert nodeagent_main([*state, "--interlink", "vk-hpc-leonardo"]) == 2
    assert "expected NODE=URL" in capsys.readouterr().err
    assert nodeagent_main([*state, "--interlink", "nope=http://127.0.0.1:1"]) == 2
    assert "nope is not an interLink virtual node" in capsys.readouterr().err
    monkeypatch.setenv(TOKEN_FILE_ENV, str(tmp_path / "absent"))
    assert nodeagent_main([*state, "--interlink", "vk-hpc-leonardo=http://127.0.0.1:1"]) == 2
    assert "cannot read the interLink plugin token file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        nodeagent_main([*state, "--ping-interval", "0"])
    assert "out of range" in capsys.readouterr().err


def _node() -> dict[str, Any]:
    facility = load_facility()
    [(index, vk)] = [(i, n) for i, n in enumerate(facility.nodes) if n.name == "vk-hpc-leonardo"]
    node = node_object(facility, vk, index, None)
    node["metadata"]["resourceVersion"] = "7"
    return node


def _apply(node: dict[str, Any], patch: dict[str, Any] | None) -> None:
    """A JSON merge patch of metadata.annotations and spec.taints, as the API server applies it."""
    if patch is None:
        return
    for k, v in (patch["metadata"].get("annotations") or {}).items():
        if v is None:
            node["metadata"]["annotations"].pop(k, None)
        else:
            node["metadata"]["annotations"][k] = v
    if "spec" in patch:
        node["spec"]["taints"] = patch["spec"]["taints"]


def test_ping_sets_capacity_never_zero_conditions_and_the_plugin_taints() -> None:
    node = _node()
    configured = dict(node["status"]["capacity"])
    not_ready(node, "InterlinkPingFailed", "down")
    conds = {c["type"]: c for c in node["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["InterlinkConnectivity"]["reason"] == "InterlinkPingFailed"
    patch = taint_patch(node, False, None)
    assert patch is not None and patch["metadata"]["resourceVersion"] == "7"  # a concurrent writer gets a 409
    _apply(node, patch)
    keys = {(t["key"], t["effect"]) for t in node["spec"]["taints"]}
    assert keys == {("node.kubernetes.io/not-ready", "NoSchedule"), ("virtual-node.interlink/no-schedule",
                                                                     "NoSchedule")}
    assert taint_patch(node, False, None) is None  # nothing to change
    ping = PingResponse.model_validate({
        "status": "ok", "resources": {"cpu": "0", "memory": "512Gi", "pods": "1000",
                                      "accelerators": [{"resourceType": "nvidia.com/gpu", "available": 8}]},
        "taints": [{"key": "site", "value": "leonardo", "effect": "NoSchedule"},
                   {"key": "virtual-node.interlink/no-schedule", "value": "true"}]})
    ready(node, ping, configured)
    cap = node["status"]["capacity"]
    assert cap["cpu"] == configured["cpu"]  # a 0 from a full cluster does not drain the node
    assert (cap["memory"], cap["pods"], cap["nvidia.com/gpu"]) == ("512Gi", "1000", "8")
    assert node["status"]["allocatable"] == cap
    conds = {c["type"]: c for c in node["status"]["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["InterlinkConnectivity"]["status"] == "True"
    # Taints: the not-ready one goes, the plugin's own comes (never a second interLink taint), with the ping.
    _apply(node, taint_patch(node, True, plugin_taints(ping), ping.model_dump_json()))
    keys = {(t["key"], t["effect"]) for t in node["spec"]["taints"]}
    assert keys == {("site", "NoSchedule"), ("virtual-node.interlink/no-schedule", "NoSchedule")}
    assert "512Gi" in node["metadata"]["annotations"]["interlink.virtual-kubelet.io/ping-response"]
    # Another writer's taint stays (the node lifecycle controller's NoExecute one, say).
    node["spec"]["taints"].append({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"})
    ping.taints = []
    _apply(node, taint_patch(node, True, plugin_taints(ping)))
    assert sorted(t["key"] for t in node["spec"]["taints"]) == ["node.kubernetes.io/unreachable",
                                                                  "virtual-node.interlink/no-schedule"]


def test_rbac_binds_the_virtual_kubelets_group_not_nodes() -> None:
    role, binding = rbac.rbac()
    rules = {(r["apiGroups"][0], res): set(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert {"patch"} <= rules[("", "nodes")] and {"patch"} <= rules[("", "nodes/status")]
    assert {"patch"} <= rules[("", "pods/status")] and rules[("", "secrets")] == {"get"}
    assert rules[("", "serviceaccounts/token")] == {"create"}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": rbac.GROUP}]
    assert not rbac.user("vk-hpc-leonardo").startswith("system:")
