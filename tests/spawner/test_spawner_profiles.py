"""Profiles from the facility file, per user: who sees what, and what the rendered pod asks for."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from tornado import web

from aifacility.embedded.nodeagent.hostgpus import HostGPU, host_node, with_host_node
from aifacility.facility import Facility
from aifacility.spawner import profiles


def slugs(facility: Facility, *groups: str) -> list[str]:
    return [p["slug"] for p in profiles.render_profile_list(facility, groups)]


def test_alice_in_physics_and_ml_sees_the_mig_profiles_bob_in_physics_does_not(facility: Facility) -> None:
    alice = slugs(facility, "physics", "ml")
    bob = slugs(facility, "physics")
    assert {"mig-1g-10gb", "mig-3g-40gb", "gpu-a30"} <= set(alice)
    assert not {"mig-1g-10gb", "mig-3g-40gb", "gpu-a30", "gpu-rtx5000"} & set(bob)
    assert {"cpu-small", "cpu-large", "gpu-t4", "fpga-v70"} <= set(bob)
    # Profiles open to everyone are seen by a user of no group at all.
    assert slugs(facility) == ["cpu-small"]


def test_rendered_mig_profile_asks_for_the_slice_on_the_a100_nodes(facility: Facility) -> None:
    (mig,) = [p for p in profiles.render_profile_list(facility, ["ml"]) if p["slug"] == "mig-1g-10gb"]
    o = mig["kubespawner_override"]
    assert o["extra_resource_limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert o["extra_resource_guarantees"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert o["node_selector"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert o["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert o["mem_limit"] == 16 * 2**30 and o["cpu_limit"] == 2.0
    assert list(mig["profile_options"]["image"]["choices"]) == ["ml"]


def test_fpga_profile_uses_the_xilinx_resource(facility: Facility) -> None:
    (fpga,) = [p for p in profiles.render_profile_list(facility, ["physics"]) if p["slug"] == "fpga-v70"]
    assert fpga["kubespawner_override"]["extra_resource_limits"] == {
        "xilinx.com/fpga-xilinx_v70_gen5x8_qdma_2_202220_1": "1"}
    assert fpga["kubespawner_override"]["node_selector"] == {"xilinx-fpga-type": "alveo-v70"}


@pytest.mark.parametrize(("options", "fragment"), [
    ({"profile": "mig-1g-10gb"}, "only open to the group(s) ml"),
    ({"profile": "no-such"}, "There is no profile 'no-such'"),
    ({"profile": "gpu-t4", "image": "root6"}, "not 'root6'"),
    ({"profile": "fpga-v70", "queue": True}, "cannot wait in a queue"),
    ({"profile": 3}, "must be a profile name"),
])
def test_bad_choices_are_refused_with_a_reason(facility: Facility, options: dict[str, Any],
                                               fragment: str) -> None:
    with pytest.raises(profiles.ProfileChoiceError, match=re.escape(fragment)):
        profiles.check_choice(facility, "bob", ["physics"], options)


def test_no_profile_means_the_default(facility: Facility) -> None:
    assert profiles.check_choice(facility, "bob", ["physics"], {}).name == "cpu-small"


async def test_pod_of_alice_on_a_mig_slice(make_spawner: Any, make_user: Any) -> None:
    spawner = make_spawner(make_user("alice", "physics", "ml"), profile="mig-1g-10gb", image="ml")
    await spawner.load_user_options()
    spawner.volumes, spawner.volume_mounts = [], []
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    (c,) = pod["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert c["resources"]["requests"]["nvidia.com/mig-1g.10gb"] == "1"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                                           "nvidia.com/mig.strategy": "mixed"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert c["image"] == "harbor.cloud.infn.it/aifacility/notebook-ml:2026.11"
    # As KubeSpawner writes it: the command is the args of the image's ENTRYPOINT (tini in docker-stacks).
    assert "command" not in c
    assert c["args"] == ["jupyterhub-singleuser", "--ServerApp.ip=$(POD_IP)"]
    assert c["securityContext"]["runAsUser"] == 1000 and c["securityContext"]["runAsGroup"] == 100
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["fsGroup"] == 100
    env = {e["name"]: e for e in c["env"]}
    assert env["HOME"]["value"] == "/home/jovyan"
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert pod["metadata"]["labels"]["aifacility.io/profile"] == "mig-1g-10gb"
    assert spawner.namespace == "aifacility"


async def test_bob_cannot_spawn_a_mig_slice(make_spawner: Any, make_user: Any) -> None:
    spawner = make_spawner(make_user("bob", "physics"), profile="mig-1g-10gb")
    with pytest.raises(web.HTTPError) as e:
        spawner.chosen_profile()
    assert e.value.status_code == 400
    assert "only open to the group(s) ml" in e.value.log_message % e.value.args


async def test_form_shows_free_units_per_accelerator_and_escapes_text(make_spawner: Any, make_user: Any,
                                                                      facility: Facility) -> None:
    spawner = make_spawner(make_user("alice", "physics", "ml"))
    free = {"t4": (0, 4), "mig-1g-10gb": (3, 4)}
    html = spawner._render_options_form(profiles.render_profile_list(facility, ["physics", "ml"], free))
    assert re.search(r'data-accelerator="t4">\s*1 \u00d7 NVIDIA Tesla T4 \(16Gi\) \u2014\s*<span '
                     r'class="aif-free aif-none"\s+data-free="0">0 of 4 free', html)
    assert 'data-free="3">3 of 4 free' in html
    assert "availability unknown" in html  # accelerators the cluster did not report
    assert 'name="profile-option-gpu-t4--queue"' in html and 'name="profile-option-fpga-v70--queue"' not in html
    assert 'name="profile-option-mig-1g-10gb--image"' in html
    # Facility-file text is data, not markup.
    evil = facility.model_copy(update={"profiles": [facility.profiles[0].model_copy(
        update={"description": "<script>alert(1)</script>"})]})
    assert "<script>alert(1)" not in spawner._render_options_form(profiles.render_profile_list(evil, []))


async def test_form_marks_a_time_sliced_gpu_as_shared(make_spawner: Any, make_user: Any,
                                                      facility: Facility) -> None:
    """`aifacility up --host-gpus --gpu-replicas 4`: the machine's T4 is shared by up to 4 sessions, and the
    form says so where a person chooses (issue 16)."""
    t4 = HostGPU(0, "GPU-t4", "Tesla T4", 15360, 0)
    shared = with_host_node(facility, host_node(facility, [t4], replicas=4), 4)
    assert profiles.time_sliced(shared, "t4") == 4 and profiles.time_sliced(facility, "t4") is None
    spawner = make_spawner(make_user("alice", "physics", "ml"))
    html = spawner._render_options_form(profiles.render_profile_list(shared, ["physics", "ml"]))
    assert re.search(r'data-accelerator="t4">\s*1 \u00d7 NVIDIA Tesla T4 \(16Gi\) <span class="aif-shared" '
                     r'data-shared-by="4">shared: up to\s+4 sessions take turns on one GPU', html)
    assert html.count("aif-shared\"") == 1  # the MIG slices and the FPGA are not time-sliced


async def test_form_options_become_user_options(make_spawner: Any, make_user: Any) -> None:
    spawner = make_spawner(make_user("alice", "ml"))
    opts = spawner.options_from_form({"profile": ["gpu-t4"], "profile-option-gpu-t4--image": ["hep"],
                                      "profile-option-gpu-t4--queue": ["true"]})
    # the ticked checkbox ("true") is the boolean a REST body must send
    assert opts == {"profile": "gpu-t4", "image": "hep", "queue": True}
    assert profiles.wants_queue(opts)
