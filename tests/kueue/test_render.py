"""The facility's Kueue objects: what render() derives from the facility file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aifacility.facility import FacilityError, load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.kueue import render


def by_name(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_demo_objects_are_v1beta2_queues_of_both_groups_and_the_events_queue() -> None:
    # Whether Kueue accepts them is shown where the real Kueue admits them (tests/controlplane): its CRDs'
    # schemas and CEL rules, and its validating webhooks, run on every apply.
    objs = render(load_facility())
    assert [o["kind"] for o in objs].count("ClusterQueue") == 3
    assert {o["apiVersion"] for o in objs} == {"kueue.x-k8s.io/v1beta2"}


def test_flavors_follow_accelerators_and_virtual_nodes() -> None:
    flavors = by_name(render(load_facility()), "ResourceFlavor")
    # With offload targets the CPU flavor is the local site's, so that a job selecting a site skips it.
    assert flavors["default"]["spec"] == {"nodeLabels": {"aifacility.io/site": "local"}}
    assert flavors["t4"]["spec"] == {
        "nodeLabels": {"nvidia.com/gpu.product": "Tesla-T4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    assert flavors["mig-1g-10gb"]["spec"]["nodeLabels"]["nvidia.com/mig.strategy"] == "mixed"
    taint = [{"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}]
    # hpc: user-selective (only pods that tolerate the taint); htc: spill-over (the flavor injects it).
    assert flavors["hpc"]["spec"] == {
        "nodeLabels": {"kubernetes.io/hostname": "vk-hpc-leonardo", "aifacility.io/site": "hpc"}, "nodeTaints": taint}
    assert flavors["htc"]["spec"]["nodeLabels"] == {"kubernetes.io/hostname": "vk-htc-tier1",
                                                    "aifacility.io/site": "htc"}
    assert flavors["htc"]["spec"]["tolerations"] == [
        {"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}]


def test_cluster_queues_per_group_in_one_cohort() -> None:
    objs = render(load_facility())
    cqs = by_name(objs, "ClusterQueue")
    assert set(cqs) == {"physics", "ml", "events"}  # events: the events queue (events.queue)
    physics, ml = cqs["physics"]["spec"], cqs["ml"]["spec"]
    assert physics["cohortName"] == ml["cohortName"] == "aifacility"
    assert physics["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "aifacility"}}
    cpu_group = physics["resourceGroups"][0]
    assert cpu_group["coveredResources"] == ["cpu", "memory"]
    assert [f["name"] for f in cpu_group["flavors"]] == ["default", "hpc", "htc"]
    # Both GPU models advertised as nvidia.com/gpu share one resource group, in facility order.
    gpu = next(g for g in physics["resourceGroups"] if g["coveredResources"] == ["nvidia.com/gpu"])
    quotas = {f["name"]: f["resources"][0]["nominalQuota"] for f in gpu["flavors"]}
    assert quotas == {"t4": "4", "rtx5000": "0"}  # from quotas.groups.physics.accelerators
    ml_cpu = ml["resourceGroups"][0]["flavors"][0]["resources"][0]
    assert ml_cpu == {"name": "cpu", "nominalQuota": "48", "borrowingLimit": "16"}
    lqs = by_name(objs, "LocalQueue")
    assert lqs["ml"]["metadata"]["namespace"] == "aifacility"
    assert lqs["ml"]["spec"] == {"clusterQueue": "ml"}


def _facility_with(tmp_path: Path, queues: dict[str, Any], **sections: Any) -> Path:
    data = yaml.safe_load(demo_facility_path().read_text())
    data.pop("events")  # the demo's events queue is one of its queue groups
    data["queues"] = queues
    data.update(sections)
    path = tmp_path / "facility.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("queues", "message"), [
    ({"groups": {"physics": {"accelerators": {"h100": 1}}}}, "unknown accelerator 'h100'"),
    ({"offload": [{"name": "hpc", "node": "cpu-01"}]}, "'cpu-01' is not an interLink virtual node"),
    ({"groups": {"physics": {"offload": {"grid": {"cpu": "1"}}}}}, "unknown offload target 'grid'"),
    ({"groups": {"physics": {"cpu": "lots"}}}, "'lots' is not a Kubernetes quantity"),
    ({"offload": [{"name": "t4", "node": "vk-htc-tier1"}]}, "the flavor name 't4' is used twice"),
])
def test_bad_queues_section_is_refused_with_its_field(tmp_path: Path, queues: dict[str, Any], message: str) -> None:
    with pytest.raises(FacilityError, match="queues") as err:
        load_facility(_facility_with(tmp_path, queues))
    assert message in str(err.value)


def test_disabled_queues_render_nothing_and_explicit_quota_wins(tmp_path: Path) -> None:
    # Dask workers are queued, so a facility without queues says so until Dask is off too.
    with pytest.raises(FacilityError, match=r"without queues, set dask\.enabled: false"):
        load_facility(_facility_with(tmp_path, {"enabled": False}))
    assert render(load_facility(_facility_with(tmp_path, {"enabled": False}, dask={"enabled": False}))) == []
    facility = load_facility(_facility_with(tmp_path, {"groups": {"physics": {"accelerators": {"a30": 1},
                                                                              "borrowing": False}}},
                                            events={}))  # no events queue among these groups
    cq = by_name(render(facility), "ClusterQueue")["physics"]["spec"]
    a30 = next(g for g in cq["resourceGroups"] if g["coveredResources"] == ["nvidia.com/gpu-a30"])
    assert a30["flavors"][0]["resources"][0] == {"name": "nvidia.com/gpu-a30", "nominalQuota": "1",
                                                 "borrowingLimit": "0"}


def test_cli_prints_the_objects_and_refuses_a_bad_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from aifacility.cli import main

    assert main(["render", "kueue"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs == render(load_facility())
    assert [d["kind"] for d in docs[:3]] == ["WorkloadPriorityClass"] * 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [")
    assert main(["render", "kueue", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
