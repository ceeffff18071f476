"""Kueue as its own release and the facility's namespace, on the embedded control plane (the real API server,
Pod Security admission and Kueue 0.19.2 installed from Kueue's chart with charts/kueue-values.yaml), and the
aifacility role's guard against a second facility's flavors and queues, run for real against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aifacility.embedded.controlplane.kueue_manager import KUEUE_NAMESPACE
from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.facility.namespace import KUEUE_MANAGED_LABEL
from support.controlplane import Cluster, shared_cluster

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: Any) -> Iterator[Cluster]:
    with shared_cluster(tmp_path_factory) as c:
        yield c


def test_kueue_runs_from_its_own_namespace_and_manages_the_labelled_facility_namespace(cluster: Cluster) -> None:
    namespace = load_facility().namespace
    labels = cluster.get("namespace", namespace)["metadata"]["labels"]
    assert labels[KUEUE_MANAGED_LABEL[0]] == KUEUE_MANAGED_LABEL[1]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    services = cluster.get("services", "-n", KUEUE_NAMESPACE)["items"]
    assert any(s["metadata"]["name"].endswith("webhook-service") for s in services)
    hooks = cluster.get("mutatingwebhookconfigurations", "kueue-mutating-webhook-configuration")["webhooks"]
    pod_hook = next(h for h in hooks if h["name"] == "mpod.kb.io")
    assert pod_hook["clientConfig"]["service"]["namespace"] == KUEUE_NAMESPACE
    assert pod_hook["namespaceSelector"] == {"matchLabels": {KUEUE_MANAGED_LABEL[0]: KUEUE_MANAGED_LABEL[1]}}


def test_pod_security_refuses_a_host_path_in_the_facility_namespace_only(cluster: Cluster) -> None:
    def pod(namespace: str) -> str:
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "host-path-probe", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
                     "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}})

    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=pod(load_facility().namespace), check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "baseline' in proc.stderr and "hostPath" in proc.stderr
    # The label is what does it: the same pod in an unlabelled namespace is admitted (dry run).
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=pod("default"))


def _guard(collections_path: str, tmp_path: Path, cluster: Cluster, facility_file: Path) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Run", "ansible.builtin.include_role": {"name": "aifacility.platform.aifacility",
                                                                    "tasks_from": "kueue_guard.yml"}}]}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path, "ANSIBLE_LOCALHOST_WARNING": "false"}
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(play),
                           "-e", f"ansible_python_interpreter={sys.executable}",
                           "-e", f"aifacility_cli={VENV_BIN / 'aifacility'}",
                           "-e", f"aifacility_kubeconfig={cluster.kubeconfig}",
                           "-e", f"aifacility_facility_file={facility_file}"],
                          capture_output=True, text=True, timeout=300, env=env)


def test_the_role_refuses_a_second_facility_s_queues_of_the_same_names(
        cluster: Cluster, collections_path: str, tmp_path: Path) -> None:
    demo = yaml.safe_load(demo_facility_path().read_text())
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(demo))
    ok = _guard(collections_path, tmp_path, cluster, same)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**demo, "namespace": "second-facility"}))
    refused = _guard(collections_path, tmp_path, cluster, other)
    assert refused.returncode != 0
    assert f"belongs to the facility in namespace {demo['namespace']}" in refused.stdout
    assert "needs group and accelerator names of its own" in refused.stdout
