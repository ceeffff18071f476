"""HTCondor backend: submit descriptions parsed by the bindings' own Submit, the status mapping, and a live test
that runs only when a schedd is configured (marker htcondor_live, deselected by default)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import htcondor2
import pytest
from interlink_helpers import container, pod, retrieved
from sqlalchemy import select

from aifacility.accounting.condor import CondorCollector, schedd_reader
from aifacility.accounting.ledger import Ledger
from aifacility.accounting.schema import usage
from aifacility_interlink.backends.htcondor import HTCondorBackend, job_info, submit_description
from aifacility_interlink.config import PluginConfig
from aifacility_interlink.contract import LogStruct, Pod, RetrievedPodData
from aifacility_interlink.service import PluginService


def cfg(tmp_path: Path, **htc: object) -> PluginConfig:
    return PluginConfig.model_validate({"backend": "htcondor", "data_root": str(tmp_path), "runtime": "none",
                                        "htcondor": htc})


def two_container_pod() -> dict:
    p = pod("ana", [container("reco", "echo reco", limits={"cpu": "2", "memory": "3Gi", "nvidia.com/gpu": "1",
                                                           "xilinx.com/fpga": "1"}),
                    container("plot", "echo plot", limits={"cpu": "500m", "memory": "512Mi"})],
            init=[container("stage", "echo stage")])
    p["spec"]["activeDeadlineSeconds"] = 7200
    p["metadata"]["labels"] = {"aifacility.io/user": "alice", "aifacility.io/group": "physics"}
    return p


def test_submit_description_parses_and_asks_for_everything(tmp_path: Path) -> None:
    c = cfg(tmp_path, custom_resources={"xilinx.com/fpga": "FPGA"}, extra_submit={"accounting_group": "phys"})
    data = RetrievedPodData.model_validate(retrieved(two_container_pod()))
    job_dir = tmp_path / "job"
    text = submit_description(c, data, job_dir)
    sub = dict(htcondor2.Submit(text))
    assert sub["request_cpus"] == "3"  # 2 + 0.5 rounded up
    assert sub["request_memory"] == str(3 * 1024 + 512)
    assert sub["request_gpus"] == "1"
    assert sub["request_FPGA"] == "1"
    assert sub["allowed_job_duration"] == "7200"  # from activeDeadlineSeconds, not a fixed hour
    assert sub["executable"] == str(job_dir / "job.sh")
    assert sub["output"] == str(job_dir / "job.out")
    assert sub["accounting_group"] == "phys"
    assert sub["MY.InterLinkPodUID"] == f'"{data.pod.metadata.uid}"'
    assert sub["MY.InterLinkManaged"] == "true"
    # Whose job it is, for the facility's HTCondor history collector (accounting/condor.py).
    assert (sub["MY.AifacilityUser"], sub["MY.AifacilityGroup"]) == ('"alice"', '"physics"')
    # A site's own submit lines cannot change it.
    c = cfg(tmp_path, extra_submit={"+AifacilityUser": '"bob"'})
    assert dict(htcondor2.Submit(submit_description(c, data, job_dir)))["MY.AifacilityUser"] == '"alice"'


def test_default_wall_time_and_no_gpu(tmp_path: Path) -> None:
    p = pod("cpu", [container("c", "true")])
    data = RetrievedPodData.model_validate(retrieved(p))
    sub = dict(htcondor2.Submit(submit_description(cfg(tmp_path, default_wall_seconds=600), data, tmp_path)))
    assert sub["allowed_job_duration"] == "600"
    assert "request_gpus" not in sub
    assert sub["request_cpus"] == "1" and sub["request_memory"] == "1024"


def test_runner_runs_every_container(tmp_path: Path) -> None:
    backend = HTCondorBackend(cfg(tmp_path))
    data = RetrievedPodData.model_validate(retrieved(two_container_pod()))
    svc = PluginService(cfg(tmp_path), backend)
    try:
        job_dir = tmp_path / "j"
        (job_dir / "ctn").mkdir(parents=True)
        body = svc.scripts.body(data, job_dir, gpus=True)
        backend.render(data, job_dir, body, job_dir / "job.sub")
    finally:
        svc.store.close()
    runner = (job_dir / "job.sh").read_text()
    assert runner.startswith("#!/bin/bash\n")
    assert "run_ctn init stage ctn_init_0 & wait $! || exit $?" in runner
    assert "supervise run reco 0 yes 30 &" in runner and "supervise run plot 1 yes 30 &" in runner


@pytest.mark.parametrize(
    ("ad", "state", "reason", "code"),
    [
        ({"JobStatus": 1}, "pending", "HTCondorIdle", None),
        ({"JobStatus": 5, "HoldReason": "disk quota"}, "pending", "HTCondorHeld", None),
        ({"JobStatus": 2}, "running", "", None),
        ({"JobStatus": 6}, "running", "", None),
        ({"JobStatus": 7}, "running", "", None),
        ({"JobStatus": 4, "ExitCode": 0}, "finished", "Completed", 0),
        ({"JobStatus": 4, "ExitCode": 2}, "finished", "Error", 2),
        ({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9}, "finished", "Error", 137),
        ({"JobStatus": 3, "RemoveReason": "via condor_rm"}, "finished", "Cancelled", 143),
        ({"JobStatus": 3, "RemoveReason": "The job exceeded allowed job duration of 10 seconds"},
         "finished", "DeadlineExceeded", 143),
    ],
)
def test_status_mapping(ad: dict, state: str, reason: str, code: int | None) -> None:
    info = job_info(ad)
    assert (info.state, info.reason, info.exit_code) == (state, reason, code)
    if ad.get("HoldReason"):
        assert "disk quota" in info.message


def test_held_job_is_pending_in_pod_status(tmp_path: Path) -> None:
    """The service turns a held HTCondor job into waiting containers with the hold reason."""
    svc = PluginService(cfg(tmp_path), HTCondorBackend(cfg(tmp_path)))
    try:
        p = two_container_pod()
        job_dir = tmp_path / "physics-x"
        svc.store.begin_submit(p["metadata"]["uid"], "physics", "ana", job_dir,
                               '{"init": [["stage", "i"]], "run": [["reco", "i"], ["plot", "i"]]}')
        svc.store.submitted(p["metadata"]["uid"], "42")
        row = svc.store.get(p["metadata"]["uid"])
        assert row is not None
        st, final = svc._build(row, job_info({"JobStatus": 5, "HoldReason": "out of disk"}))
        assert not final
        assert st.initContainers[0].state.waiting is not None
        assert "out of disk" in st.containers[0].state.waiting.message
        st, final = svc._build(row, job_info({"JobStatus": 3, "RemoveReason": "condor_rm"}))
        assert final and {c.state.terminated.reason for c in st.containers} == {"Cancelled"}
    finally:
        svc.store.close()


@pytest.mark.htcondor_live
def test_live_schedd_runs_a_pod(tmp_path: Path) -> None:
    """Needs AIFACILITY_HTCONDOR_SCHEDD (a schedd name, or 'local') and a data root shared with the workers
    (AIFACILITY_HTCONDOR_DATA_ROOT, default: this test's temp dir)."""
    schedd = os.environ.get("AIFACILITY_HTCONDOR_SCHEDD")
    assert schedd, "set AIFACILITY_HTCONDOR_SCHEDD to a schedd name (or 'local') to run the live test"
    root = Path(os.environ.get("AIFACILITY_HTCONDOR_DATA_ROOT", str(tmp_path)))
    c = cfg(root, **({} if schedd == "local" else {"schedd_name": schedd}))
    svc = PluginService(c, HTCondorBackend(c))

    async def go() -> None:
        p = two_container_pod()
        for ctn in p["spec"]["containers"]:
            ctn["resources"] = {}
        data = RetrievedPodData.model_validate(retrieved(p))
        created = await svc.create(data)
        assert created.PodJID.isdigit()
        pod_obj = Pod.model_validate(p)
        for _ in range(600):
            [st] = await svc.status([pod_obj])
            if all(x.state.terminated for x in st.containers):
                break
            await asyncio.sleep(1)
        assert [x.state.terminated.exitCode for x in st.containers] == [0, 0]
        out, _ = svc.log_file(LogStruct(PodUID=p["metadata"]["uid"], ContainerName="reco"))
        assert "reco" in out.read_text()
        return created.PodJID

    try:
        job = asyncio.run(go())
    finally:
        svc.store.close()
    # The facility's accounting reads the finished job from the schedd's history, as alice's, charged to physics.
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    collector = CondorCollector(ledger, "htc", schedd_reader(None if schedd == "local" else schedd))
    try:
        for _ in range(60):
            collector.sweep()
            with ledger.engine.connect() as conn:
                rows = [r for r in conn.execute(select(usage)) if f"#{job}.0#" in r.id and r.end_ts is not None]
            if rows:
                break
            time.sleep(2)
    finally:
        ledger.close()
    assert rows and {(r.user_name, r.group_name, r.site) for r in rows} == {("alice", "physics", "htc")}
