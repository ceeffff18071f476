"""The rules a job must pass before it exists, and the Job that an accepted plan becomes (demo facility)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from aifacility.facility import load_facility
from aifacility.jobs.manifest import job_manifest, new_job_name
from aifacility.jobs.policy import JobPlan, JobRefused, options, plan
from aifacility.jobs.request import JobRequest, readable
from aifacility.jobs.status import describe

FAC = load_facility()


def make(body: dict[str, Any], groups: tuple[str, ...] = ("ml",), user: str = "alice") -> JobPlan:
    return plan(FAC, user, groups, JobRequest.model_validate(body), "alice-abc123")


def refused(body: dict[str, Any], groups: tuple[str, ...] = ("ml",)) -> str:
    with pytest.raises(JobRefused) as e:
        make(body, groups)
    return str(e.value)


def test_defaults_filled_from_the_facility_file() -> None:
    p = make({"command": ["python", "-c", "print(1)"]})
    assert (p.group, p.kind, p.image, p.cpu, p.memory) == ("ml", "job", "ml", "1", "2Gi")
    assert p.seconds == int(FAC.jobs.default_hours * 3600)
    assert p.accelerator is None and p.offload is None


def test_mig_by_profile_or_by_name() -> None:
    by_profile = make({"command": ["nvidia-smi"], "accelerator": {"kind": "mig", "name": "1g.10gb"}})
    by_name = make({"command": ["nvidia-smi"], "accelerator": {"kind": "mig", "name": "mig-1g-10gb", "count": 2}})
    assert by_profile.accelerator is not None and by_profile.accelerator.name == "mig-1g-10gb"
    assert by_name.accelerator_count == 2


@pytest.mark.parametrize(("body", "groups", "words"), [
    ({"command": ["x"], "group": "physics"}, ("ml",), "cannot charge jobs to group 'physics'"),
    ({"command": ["x"], "group": "nobody"}, ("ml",), "your groups with a job queue are ml"),
    ({"command": ["x"]}, ("admins",), "None of your groups has a job queue"),
    ({"command": ["x"]}, ("ml", "physics"), "choose one with --group"),
    ({"command": ["x"], "accelerator": {"kind": "gpu", "name": "rtx5000"}}, ("physics",),
     "Group 'physics' may not use NVIDIA Quadro RTX 5000"),
    ({"command": ["x"], "accelerator": {"kind": "gpu", "name": "h100"}}, ("ml",), "There is no GPU 'h100'"),
    ({"command": ["x"], "accelerator": {"kind": "gpu", "name": "mig-1g-10gb"}}, ("ml",), "There is no GPU"),
    ({"command": ["x"], "accelerator": {"kind": "mig", "name": "1g.10gb", "count": 9}}, ("ml",),
     "would never start"),
    ({"command": ["x"], "image": "ubuntu"}, ("ml",), "Image 'ubuntu' is not one of the facility's images"),
    ({"command": ["x"], "hours": 0}, ("ml",), "positive number of hours"),
    ({"command": ["x"], "hours": -2}, ("ml",), "positive number of hours"),
    ({"command": ["x"], "hours": 1e9}, ("ml",), "more than jobs may run here"),
    ({"command": ["x"], "cpu": "lots"}, ("ml",), "cpu 'lots' is not a quantity"),
    ({"command": ["x"], "cpu": "0"}, ("ml",), "cpu must be more than 0"),
    ({"command": ["x"], "memory": "100Ti"}, ("ml",), "more than a job may ask for"),
    ({"command": ["x"], "offload": "cloud"}, ("ml",), "There is no offload target 'cloud'"),
    ({"command": ["x"], "offload": "hpc", "accelerator": {"kind": "gpu", "name": "t4"}}, ("ml",),
     "run accelerator jobs locally"),
    ({"notebook": "/etc/passwd.ipynb"}, ("ml",), "inside your home directory"),
    ({"notebook": "../bob/x.ipynb"}, ("ml",), "inside your home directory"),
    ({"notebook": "fit.py"}, ("ml",), "is not a notebook"),
])
def test_refusals_say_what_to_change(body: dict[str, Any], groups: tuple[str, ...], words: str) -> None:
    assert words in refused(body, groups)


@pytest.mark.parametrize(("body", "words"), [
    ({}, 'give either "command"'),
    ({"command": []}, "command: List should have at least 1 item"),
    ({"command": [""]}, "must start with the program"),
    ({"command": "python run.py"}, "command: Input should be a valid list"),
    ({"command": ["x"], "notebook": "a.ipynb"}, 'give either "command"'),
    ({"command": ["x"], "parameters": {"a": 1}}, '"parameters" are for notebook jobs'),
    ({"command": ["x"], "hours": "2"}, "hours: Input should be a valid number"),
    ({"command": ["x"], "hours": float("nan")}, "hours: Input should be a finite number"),
    ({"command": ["x"], "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"command": ["x"] * 300}, "command: List should have at most 256 items"),
    ({"command": ["x"], "accelerator": {"kind": "tpu", "name": "v5"}}, "accelerator.kind"),
    ({"command": ["x"], "accelerator": {"kind": "gpu", "name": "t4", "count": 0}}, "greater than or equal to 1"),
    ({"notebook": "a.ipynb", "parameters": {"1bad": 1}}, "parameters.1bad"),
])
def test_malformed_bodies_are_refused_with_the_field(body: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as e:
        JobRequest.model_validate(body)
    assert words in readable(e.value)


def test_a_mig_job_manifest() -> None:
    name = new_job_name("alice")
    p = plan(FAC, "alice", ["ml"], JobRequest.model_validate(
        {"command": ["python", "train.py"], "accelerator": {"kind": "mig", "name": "1g.10gb"}, "hours": 2}), name)
    parts = job_manifest(FAC, p, name, ["ml"], token="eyJ.token")
    job, secret = parts["job"], parts["secret"]
    labels = job["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "ml"
    assert labels["kueue.x-k8s.io/max-exec-time-seconds"] == "7200"
    assert labels["kueue.x-k8s.io/priority-class"] == "batch"
    assert job["metadata"]["annotations"]["aifacility.io/owner"] == "alice"
    assert job["spec"]["suspend"] is True and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]
    # The accounting reads these from the pods.
    assert {pod["metadata"]["labels"][k] for k in ("aifacility.io/user", "aifacility.io/group",
                                                   "aifacility.io/kind")} == {"alice", "ml", "job"}
    spec = pod["spec"]
    assert spec["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    [c] = spec["containers"]
    assert c["command"] == ["python", "train.py"]
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "2Gi", "nvidia.com/mig-1g.10gb": "1"}
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert {"home-alice", "group-ml"} <= claims
    assert secret["metadata"]["name"] == f"{name}-token"
    assert {"name": "BEARER_TOKEN_FILE", "value": "/tmp/aifacility/token"} in c["env"]
    assert "tolerations" not in spec and "nodeSelector" not in spec  # Kueue's flavor adds them on admission


def test_a_notebook_job_runs_papermill_in_its_directory() -> None:
    params = {"alpha": 0.5, "label": "run 2", "n": 3, "dry": False}
    p = plan(FAC, "alice", ["physics"], JobRequest.model_validate(
        {"notebook": "ana/fit.ipynb", "parameters": params}), "alice-xyz789")
    job = job_manifest(FAC, p, "alice-xyz789", ["physics"], parameters=params)["job"]
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:6] == ["papermill", "--log-output", "--cwd", "/home/jovyan/ana", "/home/jovyan/ana/fit.ipynb",
                       "/home/jovyan/ana/fit.alice-xyz789.ipynb"]
    assert cmd[6:] == ["-y", "alpha: 0.5", "-y", 'label: "run 2"', "-y", "n: 3", "-y", "dry: false"]
    assert job["metadata"]["annotations"]["aifacility.io/output-notebook"] == "ana/fit.alice-xyz789.ipynb"
    assert job["metadata"]["labels"]["aifacility.io/kind"] == "notebook"


def test_an_offloaded_job_selects_its_site_and_mounts_no_shared_filesystem() -> None:
    p = plan(FAC, "alice", ["physics"], JobRequest.model_validate(
        {"command": ["sh", "-c", "srun hostname"], "offload": "hpc"}), "alice-xyz789")
    spec = job_manifest(FAC, p, "alice-xyz789", ["physics"], token="t")["job"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"aifacility.io/site": "hpc"}
    assert spec["tolerations"][0]["key"] == "virtual-node.interlink/no-schedule"
    # The remote site has no access to the facility's claims: only the token's Secret travels.
    assert [v["name"] for v in spec["volumes"]] == ["aifacility-token"]
    assert "workingDir" not in spec["containers"][0]
    assert "offload target 'hpc' does not have" in refused({"notebook": "a.ipynb", "offload": "hpc"}, ("physics",))


def test_job_names_are_valid_and_distinct() -> None:
    names = {new_job_name("Bob.Smith@example.org") for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 63 and n.replace("-", "").isalnum() and n.islower() for n in names)


def test_the_form_offers_the_user_s_groups_and_each_group_s_accelerators() -> None:
    offered = options(FAC, ["physics", "ml", "no-queue-group"])
    assert set(offered["groups"]) == {"physics", "ml"}  # a group without a job queue is not offered
    assert offered["offload"] == [t.name for t in FAC.queues.offload]
    ml = {(a["kind"], a["name"]) for a in offered["accelerators"]["ml"]}
    assert ("mig", "mig-1g-10gb") in ml and ("gpu", "t4") in ml
    assert ("gpu", "rtx5000") not in {(a["kind"], a["name"]) for a in offered["accelerators"]["physics"]}
    # every offered choice is one that plan() accepts
    for group, accels in offered["accelerators"].items():
        for a in accels:
            make({"command": ["true"], "group": group, "accelerator": {"kind": a["kind"], "name": a["name"]}},
                 groups=("physics", "ml"))


def test_the_request_is_kept_on_the_job_for_a_resubmission() -> None:
    req = JobRequest.model_validate({"notebook": "ana/fit.ipynb", "parameters": {"alpha": 0.5}, "group": "ml"})
    body = req.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    p = plan(FAC, "alice", ["ml"], req, "alice-abc123")
    job = job_manifest(FAC, p, "alice-abc123", ["ml"], dict(req.parameters), token="t", request=body)["job"]
    model = describe(job, None, None, None, {})
    assert model["request"] == {"notebook": "ana/fit.ipynb", "parameters": {"alpha": 0.5}, "group": "ml"}
    assert "t" not in json.dumps(model["request"]).split('"')  # never the token
    assert JobRequest.model_validate(model["request"]) == req  # submitting it again asks for the same job
