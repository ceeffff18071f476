"""Flag merging, resource mapping, quantities, log options, config loading: fast, no SLURM needed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
from interlink_helpers import container, pod, retrieved

from aifacility_interlink.backends.slurm import SlurmBackend, flag_names, merge_flags, parse_flags, parse_gres
from aifacility_interlink.config import ConfigError, PluginConfig, SlurmSettings, load_config
from aifacility_interlink.contract import LogOpts, RetrievedPodData
from aifacility_interlink.logs import render
from aifacility_interlink.quantity import parse_quantity, pod_resources
from aifacility_interlink.store import Store
from aifacility_interlink.volumes import PodError


def slurm_backend(**slurm: object) -> SlurmBackend:
    return SlurmBackend(PluginConfig.model_validate({"slurm": slurm}))


def data(p: dict) -> RetrievedPodData:
    return RetrievedPodData.model_validate(retrieved(p))


def test_flags_merge_flavor_then_annotation_then_limits() -> None:
    b = slurm_backend(
        partition="gpu",
        flavors=[{"name": "std", "flags": ["--qos=normal", "--time=01:00:00", "-c 2"], "default": True},
                 {"name": "big", "flags": ["--qos=big"]}],
        gres={"nvidia.com/gpu": "gpu", "xilinx.com/fpga": "fpga:u250"},
    )
    p = pod("t", [container("a", "true", limits={"cpu": "1500m", "memory": "1Gi", "nvidia.com/gpu": "2",
                                                  "xilinx.com/fpga": "1"}),
                  container("b", "true", limits={"cpu": "1", "memory": "512Mi"})],
            annotations={"slurm-job.vk.io/flags": "--qos=urgent --account phys -p debug"})
    p["spec"]["activeDeadlineSeconds"] = 5400
    flags = b.flags(data(p))
    assert flags == ["-p debug", "--qos=urgent", "--time=1:30:00",
                     "--cpus-per-task=3", "--account phys", "--mem=1536M", "--gres=gpu:2,fpga:u250:1"]


def test_the_job_says_whose_it_is_for_the_sites_accounting(tmp_path: Path) -> None:
    p = pod("t", [container("a", "true")], uid="u-1")
    p["metadata"]["labels"] = {"aifacility.io/user": "alice", "aifacility.io/group": "physics"}
    script = slurm_backend().render(data(p), tmp_path, "true\n", tmp_path / "job.sh")
    assert "#SBATCH --comment=aifacility,user=alice,group=physics,pod=u-1\n" in script


def test_flavor_annotation_selects_and_run_as_user() -> None:
    b = slurm_backend(flavors=[{"name": "std", "flags": ["--qos=normal"], "default": True},
                               {"name": "big", "flags": ["--qos=big", "--exclusive"]}])
    p = pod("t", [container("a", "true")], annotations={"slurm-job.vk.io/flavor": "big"})
    p["spec"]["securityContext"] = {"runAsUser": 1234}
    assert b.flags(data(p)) == ["--qos=big", "--exclusive", "--uid=1234"]


def test_init_containers_count_as_max_not_sum() -> None:
    p = pod("t", [container("a", "true", limits={"cpu": "2"}), container("b", "true", limits={"cpu": "1"})],
            init=[container("i", "true", limits={"cpu": "4", "memory": "2Gi"})])
    res = pod_resources(data(p).pod.spec)  # type: ignore[arg-type]
    assert res["cpu"] == 4 and res["memory"] == 2 * 2**30


def test_flag_parsing_refuses_injection() -> None:
    with pytest.raises(PodError, match="one line"):
        parse_flags("--qos=a\n#SBATCH --uid=0", "x")
    with pytest.raises(PodError, match="is not an sbatch option"):
        parse_flags("--qos=a rm -rf", "x")
    with pytest.raises(PodError, match="--output is locked by this site"):
        parse_flags("-o /tmp/x", "x", flag_names(["-o"]))
    with pytest.raises(PodError, match="--array cannot be used"):
        parse_flags("--array=1-4", "x")
    assert parse_flags("-J mine -o /tmp/x", "x") == ["-J mine", "-o /tmp/x"]  # not locked: the pod's own
    assert merge_flags(["-t 10"], ["--time=20"]) == ["--time=20"]
    # Whose job it is (the accounting comment) is the plugin's to say, by default.
    with pytest.raises(PodError, match="--comment is locked by this site"):
        parse_flags("--comment=aifacility,user=bob", "x", flag_names(SlurmSettings().locked_flags))


def test_parse_gres_variants() -> None:
    assert parse_gres("gpu:4") == {"gpu": 4}
    assert parse_gres("gpu:a100:4(S:0-1),fpga:u250:2") == {"gpu": 4, "fpga": 2}
    assert parse_gres("(null)") == {}


def test_quantities() -> None:
    assert parse_quantity("500m", "x") == Decimal("0.5")
    assert parse_quantity("4Gi", "x") == 4 * 2**30
    assert parse_quantity("1e3", "x") == 1000
    assert parse_quantity(2, "x") == 2
    with pytest.raises(PodError):
        parse_quantity("-1", "x")
    with pytest.raises(PodError):
        parse_quantity("12 GB", "x")


def test_fractional_gpu_is_refused() -> None:
    b = slurm_backend()
    p = pod("t", [container("a", "true", limits={"nvidia.com/gpu": "500m"})])
    with pytest.raises(PodError, match="whole number"):
        b.flags(data(p))


def test_capacity_never_reports_zero(tmp_path: Path) -> None:
    sinfo = tmp_path / "sinfo-shim"
    # a node that is fully allocated or down still has its totals; an empty answer gives the floors
    sinfo.write_text("#!/bin/bash\n[[ $1 == sinfo ]] && printf 'n1|0|0|(null)\\n'\n")
    sinfo.chmod(0o755)
    b = slurm_backend(command_prefix=[str(sinfo)])
    res = asyncio.run(b.capacity())
    assert res.cpu == "1" and res.memory == "1024Mi" and res.accelerators == []


def test_log_rendering_options() -> None:
    raw = "".join(f"{100 + i}.5 line-{i}\n" for i in range(5)) + "not-stamped\n"
    assert render(raw, LogOpts(), now=200).splitlines()[-1] == "not-stamped"
    assert render(raw, LogOpts(Tail=2), now=200) == "line-4\nnot-stamped\n"
    assert render(raw, LogOpts(SinceSeconds=97), now=200) == "line-3\nline-4\n"
    assert render(raw, LogOpts(Bytes=9), now=200) == "line-0\nli"
    stamped = render(raw, LogOpts(Timestamps=True, Tail=1, SinceSeconds=100), now=200)
    assert stamped == "1970-01-01T00:01:44.500000Z line-4\n"


def test_go_zero_since_time_means_unset() -> None:
    opts = LogOpts.model_validate({"SinceTime": "0001-01-01T00:00:00Z"})
    assert opts.SinceTime is None


def test_config_file_errors_are_readable(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("slurm:\n  flavours: []\n")
    with pytest.raises(ConfigError, match="flavours"):
        load_config(f)
    f.write_text("- a\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)
    f.write_text("runtime: bwrap\nslurm:\n  partition: p\n")
    cfg = load_config(f, runtime="none", data_root=tmp_path)
    assert cfg.runtime == "none" and cfg.slurm.partition == "p" and cfg.data_root == tmp_path


def test_apptainer_command_line(tmp_path: Path) -> None:
    """apptainer/singularity: exec with a command, run without; --nv for GPUs; binds with :ro for config."""
    from aifacility_interlink.runner import ScriptBuilder

    cfg = PluginConfig.model_validate({"runtime": "apptainer", "runtime_options": ["--containall"],
                                       "data_root": str(tmp_path)})
    p = pod("a", [container("gpu", "nvidia-smi", [("cfg", "/etc/cfg"), ("scratch", "/scratch")]),
                  {"name": "entry", "image": "/cvmfs/images/reco.sif", "args": ["--events", "10"]}],
            volumes=[{"name": "cfg", "configMap": {"name": "cm"}}, {"name": "scratch", "emptyDir": {}}])
    p["spec"]["containers"][0]["workingDir"] = "/work"
    d = RetrievedPodData.model_validate(retrieved(p, config_maps={"cm": {"k": "v"}}))
    body = ScriptBuilder(cfg).body(d, tmp_path, gpus=True)
    gpu_line = next(x for x in body.splitlines() if x.startswith("ctn_run_0()"))
    assert "apptainer exec --containall --nv --env-file" in gpu_line
    assert "--pwd /work" in gpu_line
    assert f"--bind {tmp_path}/volumes/cfg:/etc/cfg:ro" in gpu_line
    assert f"--bind {tmp_path}/volumes/scratch:/scratch " in gpu_line
    assert "docker://docker.io/library/busybox:1.36 sh -c nvidia-smi" in gpu_line
    entry_line = next(x for x in body.splitlines() if x.startswith("ctn_run_1()"))
    assert "apptainer run --containall --nv" in entry_line
    assert "/cvmfs/images/reco.sif --events 10" in entry_line and "docker://" not in entry_line
    assert (tmp_path / "volumes" / "cfg" / "k").read_text() == "v"


def test_projected_volume_and_ownership_for_run_as_user(tmp_path: Path) -> None:
    """interLink sends a projected volume as a config map named after the volume (keys are file paths);
    a job that runs as another user owns its job dir, so it can write logs and read its secrets."""
    from aifacility_interlink.service import _hand_over
    from aifacility_interlink.volumes import VolumePlanner

    p = pod("sa", [container("c", "true", [("kube-api-access", "/var/run/secrets/kubernetes.io/serviceaccount")])],
            volumes=[{"name": "kube-api-access",
                      "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}])
    d = retrieved(p)
    d["container"][0]["projectedvolumemaps"] = [
        {"metadata": {"name": "kube-api-access"}, "data": {"token": "jwt", "ca.crt": "PEM", "sub/namespace": "ns"}}]
    data = RetrievedPodData.model_validate(d)
    [bind] = VolumePlanner(data, tmp_path, []).binds(data.pod.spec.containers[0])  # type: ignore[union-attr]
    assert bind.read_only and bind.target == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert (bind.source / "token").read_text() == "jwt"
    assert (bind.source / "sub" / "namespace").read_text() == "ns"
    from aifacility_interlink.contract import PodSecurityContext

    _hand_over(tmp_path, PodSecurityContext(runAsUser=4242, runAsGroup=4343))
    st = (bind.source / "token").stat()
    assert (st.st_uid, st.st_gid) == (4242, 4343)
    assert tmp_path.stat().st_uid == 4242


def test_deleted_pods_are_pruned_after_the_retention_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "plugin.sqlite")
    for uid in ("old", "recent", "running"):
        store.begin_submit(uid, "default", uid, tmp_path / uid, '{"init": [], "run": []}')
        store.submitted(uid, f"{uid}-jid")
    store.mark_deleted("old")
    store.mark_deleted("recent")
    with sqlite3.connect(tmp_path / "plugin.sqlite") as db:  # deleted two weeks ago
        db.execute("UPDATE pods SET deleted_at = ? WHERE uid = 'old'", (time.time() - 14 * 86400,))
    assert store.prune_deleted(7 * 86400) == 1
    assert store.get("old") is None
    assert store.get("recent") is not None and store.get("running") is not None  # the tombstone still refuses
    store.close()


def test_a_database_from_before_pruning_gets_the_new_column(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "plugin.sqlite") as db:
        db.execute("CREATE TABLE pods (uid TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, "
                   "job_dir TEXT NOT NULL, jid TEXT, phase TEXT NOT NULL, created REAL NOT NULL, final_status TEXT, "
                   "delete_error TEXT, containers TEXT NOT NULL)")
        db.execute("INSERT INTO pods VALUES ('u', 'ns', 'p', '/x', '7', 'deleted', 0, NULL, NULL, '{}')")
    store = Store(tmp_path / "plugin.sqlite")
    assert store.get("u") is not None
    assert store.prune_deleted(3600) == 1  # no deletion time: its creation time counts
    store.close()


def test_depth_check_counts_structure_not_brackets_in_strings() -> None:
    from aifacility_interlink.bodies import BadRequest, decode_json, too_deep

    assert not too_deep("[" * 100 + "]" * 100, 100)
    assert too_deep("[" * 101 + "]" * 101, 100)
    # brackets inside strings, escaped quotes and backslashes do not count
    assert not too_deep('["' + "[" * 500 + '\\\\", "\\"[[[[", {"k{": "}]"}]', 3)
    assert too_deep('{"a": [[["x\\\\"]]]}', 3) and not too_deep('{"a": [[["x\\\\"]]]}', 4)
    assert decode_json(b'{"a": "[[[[[[[[[[[["}', "x", 8) == {"a": "[[[[[[[[[[[["}
    # unbalanced text is reported as what it is, not as too deep
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_json(b"[[[[[[[[[[[[}", "x", 8)
