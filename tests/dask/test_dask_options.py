"""The rules a Dask cluster must pass (demo facility): group, worker sizes, accelerators, clusters per user."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from aifacility.dask.options import (
    GIB,
    DaskPlan,
    DaskRefused,
    check_cluster_count,
    default_group,
    plan,
    worker_accelerators,
)
from aifacility.facility import demo_facility_path, load_facility
from aifacility.facility.model import Facility

FAC = load_facility()


def make(groups: tuple[str, ...] = ("physics",), **ask: Any) -> DaskPlan:
    return plan(FAC, "alice", groups, **ask)


def refused(groups: tuple[str, ...] = ("physics",), **ask: Any) -> str:
    with pytest.raises(DaskRefused) as e:
        make(groups, **ask)
    return str(e.value)


def variant(**dask: Any) -> Facility:
    data = yaml.safe_load(demo_facility_path().read_text())
    data["dask"] = {**data.get("dask", {}), **dask}
    return Facility.model_validate(data)


def test_gateway_cluster_with_no_options_gets_the_group_defaults() -> None:
    p = make()
    assert (p.group, p.worker_cores, p.worker_memory, p.accelerator) == ("physics", 2, 8 * GIB, None)
    assert (p.max_workers, p.max_clusters, p.user_groups) == (20, 3, ("physics",))
    ml = make(("ml",))
    assert (ml.worker_cores, ml.worker_memory, ml.max_workers, ml.max_clusters) == (1, 4 * GIB, 10, 2)


def test_a_user_in_several_groups_is_never_asked_to_choose() -> None:
    assert make(("physics", "ml", "admins")).group == "ml"  # the first with a queue, alphabetically
    assert make(("physics", "ml"), group="physics").group == "physics"
    assert default_group(variant(default_group="physics"), ["ml", "physics"]) == "physics"


def test_sizes_within_the_group_limits() -> None:
    p = make(worker_cores=8, worker_memory=32)
    assert (p.worker_cores, p.worker_memory) == (8, 32 * GIB)
    assert make(worker_memory=0.5).worker_memory == GIB // 2


def test_accelerators_from_the_facility_file_or_the_group_quota() -> None:
    assert [a.name for a in worker_accelerators(FAC, "physics")] == ["t4"]  # dask.groups.physics.accelerators
    # ml lists none: the GPUs and MIG slices of its Kueue quota (no FPGA, nothing without quota)
    assert {a.name for a in worker_accelerators(FAC, "ml")} == {"t4", "rtx5000", "a30", "mig-1g-10gb",
                                                                "mig-3g-40gb"}
    mig = make(("ml",), accelerator="mig-1g-10gb").accelerator
    assert mig is not None and mig.resource == "nvidia.com/mig-1g.10gb"


@pytest.mark.parametrize(("groups", "ask", "words"), [
    (("admins",), {}, "None of your groups may start Dask clusters"),
    ((), {}, "ask the facility team"),
    (("ml",), {"group": "physics"}, "cannot charge Dask clusters to group 'physics'; your groups that may are ml"),
    (("physics",), {"worker_cores": 9}, "Group 'physics' allows at most 8 cores per Dask worker; you asked for 9"),
    (("ml",), {"worker_cores": -1}, "at least 1"),
    (("physics",), {"worker_memory": 33}, "at most 32 GiB per Dask worker; you asked for 33 GiB"),
    (("physics",), {"worker_memory": 0.1}, "at least 0.25 GiB"),
    (("physics",), {"worker_memory": float("nan")}, "must be more than 0"),
    (("physics",), {"accelerator": "a30"}, "Dask workers of group 'physics' may not use 'a30'; they may use: t4"),
    (("ml",), {"accelerator": "alveo-v70"}, "may not use 'alveo-v70'"),
])
def test_refusals_say_what_to_change(groups: tuple[str, ...], ask: dict[str, Any], words: str) -> None:
    assert words in refused(groups, **ask)


def test_disabled_dask_refuses_everyone() -> None:
    with pytest.raises(DaskRefused, match="not enabled"):
        plan(variant(enabled=False), "alice", ["ml"])


def test_clusters_per_user() -> None:
    check_cluster_count("physics", 2, 3)
    with pytest.raises(DaskRefused, match=r"already have 3 Dask cluster\(s\) charged to group 'physics'"):
        check_cluster_count("physics", 3, 3)


@pytest.mark.parametrize(("dask", "words"), [
    ({"groups": {"nobody": {}}}, "dask.groups.nobody: the group has no queue"),
    ({"groups": {"ml": {"accelerators": ["h100"]}}}, "unknown accelerator 'h100'"),
    ({"default": {"worker_cores": 8, "max_worker_cores": 4}}, "worker_cores must be at most max_worker_cores"),
    ({"default": {"worker_memory": "64Gi"}}, "worker_memory must be at most max_worker_memory"),
    ({"image": "ubuntu"}, "dask.image: unknown image 'ubuntu'"),
    ({"default_group": "admins"}, "dask.default_group: 'admins' has no queue"),
    ({"idle_timeout_minutes": 0}, "greater than 0"),
])
def test_facility_file_mistakes(dask: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        variant(**dask)
