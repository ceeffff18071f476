"""The chart's Kueue, rendered by helm with Kueue's own chart (from the Kueue Go module the embedded facility is
built from), as `aifacility up` installs it: same version, and webhooks that cover the notebooks' namespace."""

from __future__ import annotations

from pathlib import Path

import yaml
from deploy_support import CHART

from aifacility.embedded.cluster import HUB_NAMESPACE
from aifacility.embedded.controlplane.kueue_manager import render_umbrella_kueue, unmanaged_webhooks
from aifacility.embedded.controlplane.versions import versions
from aifacility.facility import load_facility


def test_the_chart_pins_the_kueue_the_embedded_facility_builds() -> None:
    deps = {d["name"]: d for d in yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]}
    assert deps["kueue"]["version"] == versions().kueue.lstrip("v")


def test_kueue_s_job_and_pod_webhooks_cover_the_notebook_namespace() -> None:
    rendered = render_umbrella_kueue(HUB_NAMESPACE)
    assert unmanaged_webhooks(rendered, load_facility().namespace) == []
    # ... and only it: Kueue leaves other namespaces (its own, kube-system) alone.
    assert len(unmanaged_webhooks(rendered, HUB_NAMESPACE)) == 4


def test_without_the_selector_the_notebook_namespace_would_be_left_out(tmp_path: Path) -> None:
    """Kueue's chart default (no managedJobsNamespaceSelector) with notebooks in the release namespace: what
    the chart shipped before, and what the start-up check of `aifacility up` refuses."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["kueue"]["managerConfig"]
    config = yaml.safe_load(values["controllerManagerConfigYaml"])
    config.pop("managedJobsNamespaceSelector")
    override = tmp_path / "values.yaml"
    override.write_text(yaml.safe_dump({"kueue": {"managerConfig": {
        "controllerManagerConfigYaml": yaml.safe_dump(config)}}}))
    rendered = render_umbrella_kueue("aifacility", values=(override,))
    assert sorted(unmanaged_webhooks(rendered, "aifacility")) == [
        "MutatingWebhookConfiguration mjob.kb.io", "MutatingWebhookConfiguration mpod.kb.io",
        "ValidatingWebhookConfiguration vjob.kb.io", "ValidatingWebhookConfiguration vpod.kb.io"]
