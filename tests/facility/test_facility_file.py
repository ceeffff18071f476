"""The facility file: the demo loads, and every kind of mistake names the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aifacility.facility import FacilityError, demo_facility_path, load_facility


def demo_data() -> dict:
    return yaml.safe_load(demo_facility_path().read_text())


def write(tmp_path: Path, data: object, name: str = "facility.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_demo_facility_has_the_promised_hardware() -> None:
    f = load_facility(demo_facility_path())
    nodes = {n.name: n for n in f.nodes}
    resources = {a.name: a.resource for a in f.accelerators}
    assert sum(1 for n in f.nodes if not n.accelerators and n.interlink is None) == 2  # two CPU nodes
    assert nodes["gpu-t4-01"].accelerators == {"t4": 4}
    assert nodes["gpu-mixed-01"].accelerators == {"rtx5000": 2, "a30": 1}
    a100 = nodes["gpu-a100-01"]
    assert a100.labels["nvidia.com/mig.strategy"] == "mixed"
    assert {resources[a] for a in a100.accelerators} == {
        "nvidia.com/mig-1g.10gb", "nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb"}
    assert nodes["fpga-v70-01"].accelerators == {"alveo-v70": 2}
    virtual = {n.name: n.interlink.backend for n in f.nodes if n.interlink}
    assert virtual == {"vk-hpc-leonardo": "slurm", "vk-htc-tier1": "htcondor"}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["nodes"][0].update(cpu="lots"), "nodes[0].cpu: 'lots' is not a Kubernetes quantity"),
        (lambda d: d["nodes"][2]["accelerators"].update(h100=1), "unknown accelerator 'h100'"),
        (lambda d: d["profiles"][0].update(images=["nope"]), "unknown image 'nope'"),
        (lambda d: d["profiles"][0].update(colour="blue"), "profiles[0].colour: Extra inputs are not permitted"),
        (lambda d: d["accelerators"][0].update(resource="gpu"), "not an extended resource name"),
        (lambda d: d.update(name="Demo_Site"), "name: String should match pattern"),
        (lambda d: d["profiles"].append(dict(d["profiles"][0])), "the name 'cpu-small' is used twice"),
        (lambda d: d.pop("images"), "images: Field required"),
    ],
)
def test_invalid_files_name_file_field_and_problem(tmp_path: Path, mutate, expected: str) -> None:
    data = demo_data()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(FacilityError) as err:
        load_facility(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message  # one line a person can read, no traceback


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FacilityError, match=r"not valid YAML \(line 2"):
        load_facility(write(tmp_path, "name: x\n  bad: [\n"))
    with pytest.raises(FacilityError, match="cannot read the facility file"):
        load_facility(tmp_path / "absent.yaml")
    with pytest.raises(FacilityError, match="must be a YAML mapping"):
        load_facility(write(tmp_path, "- a\n- b\n"))
