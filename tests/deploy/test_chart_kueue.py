"""Kueue as its own release: Kueue's chart (from the Kueue Go module the embedded facility is built from) rendered
by helm with `charts/kueue-values.yaml` in `kueue-system`, as the Ansible role and `aifacility up` install it:
same version, its webhooks covering the facility's namespace and nothing else, its objects in its own namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_support import ANSIBLE, REPO

from aifacility.embedded.controlplane.kueue_manager import (
    KUEUE_NAMESPACE,
    KUEUE_VALUES,
    render_kueue_release,
    unmanaged_webhooks,
)
from aifacility.embedded.controlplane.versions import versions
from aifacility.facility import load_facility
from aifacility.facility.namespace import notebook_namespace

ROLE = ANSIBLE / "roles" / "kueue"


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render_kueue_release()


def _namespace(name: str) -> dict:
    return {"metadata": {"name": name}}


def test_the_ansible_role_installs_the_kueue_the_embedded_facility_builds() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["kueue_chart_version"] == versions().kueue.lstrip("v")
    assert defaults["kueue_namespace"] == KUEUE_NAMESPACE
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    helm = next(t["kubernetes.core.helm"] for t in tasks if "kubernetes.core.helm" in t)
    assert helm["chart_ref"] == "oci://registry.k8s.io/kueue/charts/kueue"
    assert helm["chart_version"] == "{{ kueue_chart_version }}"
    assert helm["release_namespace"] == "{{ kueue_namespace }}"
    default_values = defaults["kueue_values_file"].replace("{{ playbook_dir }}", str(ANSIBLE / "playbooks"))
    assert Path(default_values).resolve() == KUEUE_VALUES


def test_the_facility_chart_no_longer_carries_kueue() -> None:
    chart = yaml.safe_load((REPO / "charts" / "aifacility" / "Chart.yaml").read_text())
    assert all(d["name"] != "kueue" for d in chart["dependencies"])
    assert "kueue" not in yaml.safe_load((REPO / "charts" / "aifacility" / "values.yaml").read_text())


def test_every_namespaced_kueue_object_is_in_kueue_s_own_namespace(rendered: list[dict]) -> None:
    namespaced = [d for d in rendered if d["metadata"].get("namespace")]
    elsewhere = [(d["kind"], d["metadata"]["namespace"]) for d in namespaced
                 if d["metadata"]["namespace"] != KUEUE_NAMESPACE]
    # The visibility API server reads the API server's client CA: Kubernetes' convention for aggregated APIs.
    assert elsewhere == [("RoleBinding", "kube-system")]
    assert any(d["kind"] == "Deployment" for d in rendered)
    assert sum(d["kind"] == "CustomResourceDefinition" for d in rendered) >= 8


def test_kueue_s_job_and_pod_webhooks_cover_the_notebook_namespace_only(rendered: list[dict]) -> None:
    facility_ns = notebook_namespace(load_facility().namespace)
    assert unmanaged_webhooks(rendered, facility_ns) == []
    # ... and only it: Kueue leaves unlabelled namespaces (the hub's release, kube-system, its own) alone.
    for other in ("aifacility-system", "kube-system", KUEUE_NAMESPACE, "default"):
        assert len(unmanaged_webhooks(rendered, _namespace(other))) == 4


def test_with_kueue_s_default_selector_its_own_release_namespace_would_be_managed(tmp_path: Path) -> None:
    """Kueue's chart default (no managedJobsNamespaceSelector): Kueue would manage every namespace but its own
    and kube-system, including the hub's; what the selector in charts/kueue-values.yaml narrows."""
    values = yaml.safe_load(KUEUE_VALUES.read_text())
    config = yaml.safe_load(values["managerConfig"]["controllerManagerConfigYaml"])
    config.pop("managedJobsNamespaceSelector")
    values["managerConfig"]["controllerManagerConfigYaml"] = yaml.safe_dump(config)
    override = tmp_path / "values.yaml"
    override.write_text(yaml.safe_dump(values))
    rendered = render_kueue_release(values=(override,))
    assert unmanaged_webhooks(rendered, _namespace("aifacility-system")) == []
    assert len(unmanaged_webhooks(rendered, _namespace(KUEUE_NAMESPACE))) == 4
