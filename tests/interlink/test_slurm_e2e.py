"""The plugin against a real SLURM (slurmctld + slurmd started by the fixtures)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter

import pytest
from interlink_helpers import (
    container,
    finished,
    pod,
    retrieved,
    running,
    sbatch_script,
    sbatch_wrap,
    scontrol_job,
    squeue,
    wait_for,
)

from aifacility_interlink.client import PluginError
from aifacility_interlink.store import Store

pytestmark = pytest.mark.slurm

CM = {"physics-cfg": {"greeting": "hello from the config map", "run.ini": "[run]\nevents=1000\n"}}
SECRET = {"grid-token": {"token": "s3cr3t-t0ken"}}
VOLUMES = [
    {"name": "cfg", "configMap": {"name": "physics-cfg"}},
    {"name": "tok", "secret": {"secretName": "grid-token"}},
    {"name": "scratch", "emptyDir": {}},
]


async def left_squeue(slurm, jid: str, within: float = 30.0) -> None:
    """Wait until SLURM no longer lists the job as pending or running."""
    for _ in range(int(within / 0.3)):
        if not squeue(slurm, "-j", jid, "-o", "%T").strip():
            return
        await asyncio.sleep(0.3)


def log_req(p: dict, name: str, **opts: object) -> dict:
    md = p["metadata"]
    return {"Namespace": md["namespace"], "PodUID": md["uid"], "PodName": md["name"], "ContainerName": name,
            "Opts": opts}


async def test_pod_with_init_two_containers_volumes_under_bwrap(slurm, plugin_factory, tmp_path) -> None:
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "events.txt").write_text("42 events\n")
    plugin = plugin_factory(slurm, runtime="bwrap", host_path_prefixes=[str(datasets)])
    init = container("fetch", "cat /etc/physics/greeting > /scratch/from-init && echo init-done",
                     [("cfg", "/etc/physics"), ("scratch", "/scratch")])
    reco = container(
        "reco",
        "cat /etc/physics/greeting; echo; cat /etc/grid/token; echo; cat /scratch/from-init; echo;"
        " grep events /etc/physics/run.ini; echo reco-output > /scratch/shared.txt;"
        " touch /etc/physics/x 2>/dev/null && echo writable || echo read-only; exit 3",
        [("cfg", "/etc/physics"), ("tok", "/etc/grid"), ("scratch", "/scratch")],
        limits={"cpu": "1", "memory": "128Mi"},
    )
    ana = container(
        "analysis",
        "for i in $(seq 100); do [ -e /scratch/shared.txt ] && break; sleep 0.1; done;"
        " echo \"analysis saw: $(cat /scratch/shared.txt) $MODE\"; ls /etc/grid 2>&1 | head -1;"
        " cat /data/events.txt",
        [("scratch", "/scratch"), ("data", "/data")], env={"MODE": "fast mode"},
    )
    volumes = [*VOLUMES, {"name": "data", "hostPath": {"path": str(datasets)}}]
    p = pod("reco-1", [reco, ana], init=[init], volumes=volumes)
    async with plugin.client() as c:
        created = await c.create(retrieved(p, CM, SECRET))
        assert created.PodUID == p["metadata"]["uid"] and created.PodJID.isdigit()
        [st] = await wait_for(c, [p], finished)
        assert st.JID == created.PodJID
        assert [x.state.terminated.exitCode for x in st.initContainers] == [0]
        codes = {x.name: x.state.terminated.exitCode for x in st.containers}
        assert codes == {"reco": 3, "analysis": 0}
        assert st.containers[0].state.terminated.reason == "Error"
        assert (await c.logs(log_req(p, "fetch"))).strip() == "init-done"
        reco_log = (await c.logs(log_req(p, "reco"))).splitlines()
        assert reco_log == ["hello from the config map", "s3cr3t-t0ken", "hello from the config map",
                            "events=1000", "read-only"]
        ana_log = await c.logs(log_req(p, "analysis"))
        assert "analysis saw: reco-output fast mode" in ana_log
        # the secret is mounted only where asked: /etc/grid does not exist in the analysis container
        assert "No such file" in ana_log
        assert "42 events" in ana_log  # an allowed hostPath, bound at its mount path
    # the batch job itself ended with the highest exit code
    job = scontrol_job(slurm, created.PodJID)
    assert "JobState=FAILED" in job and "ExitCode=3:0" in job


async def test_failed_init_container_stops_the_pod(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm, runtime="none")
    p = pod("init-fails", [container("main", "echo must-not-run")],
            init=[container("check", "echo checking; exit 7"), container("never", "echo never")])
    async with plugin.client() as c:
        await c.create(retrieved(p))
        [st] = await wait_for(c, [p], finished)
    assert st.initContainers[0].state.terminated.exitCode == 7
    assert st.initContainers[1].state.terminated.reason == "InitContainerFailed"
    assert st.containers[0].state.terminated.reason == "InitContainerFailed"
    assert st.containers[0].state.terminated.exitCode != 0


async def test_logs_options_and_follow(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm, runtime="none")
    p = pod("talker", [container("talk", "for i in 1 2 3 4 5; do echo line-$i; sleep 0.4; done")])
    async with plugin.client() as c:
        await c.create(retrieved(p))
        await wait_for(c, [p], running)
        followed = "".join([chunk async for chunk in c.follow_logs(log_req(p, "talk"))])
        assert followed.splitlines() == [f"line-{i}" for i in range(1, 6)]
        await wait_for(c, [p], finished)
        assert (await c.logs(log_req(p, "talk", Tail=2))).splitlines() == ["line-4", "line-5"]
        assert await c.logs(log_req(p, "talk", Bytes=8)) == "line-1\nl"
        stamped = (await c.logs(log_req(p, "talk", Timestamps=True, Tail=1))).strip()
        assert stamped.endswith("Z line-5") and stamped[:4].isdigit()
        assert await c.logs(log_req(p, "talk", SinceSeconds=3600)) != ""
        assert await c.logs(log_req(p, "talk", SinceTime="2999-01-01T00:00:00Z")) == ""


async def test_long_job_is_deleted_and_leaves_squeue(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm, runtime="none")
    p = pod("long", [container("sleeper", "echo started; sleep 600")])
    p["spec"]["terminationGracePeriodSeconds"] = 0  # cancelled at once (graceful stops: test_probes_hooks_limits)
    async with plugin.client() as c:
        jid = (await c.create(retrieved(p))).PodJID
        await wait_for(c, [p], running)
        assert squeue(slurm, "-j", jid, "-o", "%T").strip() == "RUNNING"
        await c.delete(p)
        await left_squeue(slurm, jid)
        assert squeue(slurm, "-j", jid, "-o", "%T").strip() == ""  # not pending/running any more
        assert "CANCELLED" in squeue(slurm, "--states=all", "-j", jid, "-o", "%T")
        # once the plugin's delete loop has seen SLURM confirm, the pod and its files are gone
        for _ in range(40):
            try:
                await c.logs(log_req(p, "sleeper"))
            except PluginError as err:
                assert err.status == 404
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError("the plugin still serves logs of a deleted pod after 10 s")


async def test_failed_delete_is_retried_until_slurm_confirms(slurm, plugin_factory, count_shim) -> None:
    shim, _ = count_shim
    fail = shim.parent / "fail-scancel"
    plugin = plugin_factory(slurm, runtime="none", slurm={"command_prefix": [str(shim)]})
    p = pod("stubborn", [container("sleeper", "sleep 600")])
    async with plugin.client() as c:
        jid = (await c.create(retrieved(p))).PodJID
        await wait_for(c, [p], running)
        fail.touch()
        message = await c.delete(p)
        assert "retries" in message
        await asyncio.sleep(1.5)  # several retry rounds fail
        assert squeue(slurm, "-j", jid, "-o", "%T").strip() == "RUNNING"
        fail.unlink()
        await left_squeue(slurm, jid)
        assert squeue(slurm, "-j", jid, "-o", "%T").strip() == ""


async def test_sigkill_with_20_running_jobs_then_restart(slurm, plugin_factory, count_shim) -> None:
    shim, calls = count_shim
    plugin = plugin_factory(slurm, runtime="none", slurm={"command_prefix": [str(shim)]})
    pods = [pod(f"job-{i}", [container("main", f"sleep 4; echo done-{i}; exit {i % 3}")]) for i in range(20)]
    async with plugin.client() as c:
        jids = {}
        for p in pods:
            jids[p["metadata"]["uid"]] = (await c.create(retrieved(p))).PodJID
        await wait_for(c, pods[:1], running)
    plugin.kill(signal.SIGKILL)
    plugin.start()
    async with plugin.client() as c:
        # interLink retries /create after an error: the restarted plugin must answer with the same jobs
        for p in pods:
            assert (await c.create(retrieved(p))).PodJID == jids[p["metadata"]["uid"]]
        calls.write_text("")
        statuses = await c.status(pods)
        assert Counter(calls.read_text().split()) == Counter({"squeue": 1})  # one call for 20 pods
        assert {s.UID: s.JID for s in statuses} == jids
        statuses = await wait_for(c, pods, finished)
    for i, s in enumerate(statuses):
        assert s.containers[0].state.terminated.exitCode == i % 3
    names = squeue(slurm, "--states=all", "-o", "%j").split()
    per_pod = Counter(n for n in names if n in jids)
    assert per_pod == Counter(dict.fromkeys(jids, 1))  # none was submitted twice
    assert Counter(calls.read_text().split())["sbatch"] == 0


async def test_ping_reports_capacity_with_gpus(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm, runtime="none")
    async with plugin.client() as c:
        ping = await c.ping()
    assert ping.status == "ok"
    assert ping.resources is not None
    assert ping.resources.cpu == str(slurm.cpus)
    assert ping.resources.memory == f"{slurm.memory_mb}Mi"
    assert [(a.resourceType, a.available) for a in ping.resources.accelerators] == [("nvidia.com/gpu", 4)]


async def test_gpu_limits_become_gres(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm, runtime="none")
    p = pod("gpu", [container("train", "echo gpus=$SLURM_GPUS_ON_NODE", limits={"nvidia.com/gpu": "2"})])
    async with plugin.client() as c:
        jid = (await c.create(retrieved(p))).PodJID
        await wait_for(c, [p], finished)
        out = await c.logs(log_req(p, "train"))
    assert out.strip() == "gpus=2"
    assert "gres:gpu:2" in squeue(slurm, "--states=all", "-j", jid, "-o", "%b")



async def test_crash_between_sbatch_and_record_does_not_submit_twice(slurm, plugin_factory, count_shim) -> None:
    """The row is written before sbatch; a plugin that died right after sbatch finds the job by its script (in the
    job dir named by the pod's uid), whatever the job's name."""
    shim, calls = count_shim
    plugin = plugin_factory(slurm, runtime="none", slurm={"command_prefix": [str(shim)]})
    plugin.kill(signal.SIGKILL)
    p = pod("crashy", [container("main", "echo recovered")])
    uid = p["metadata"]["uid"]
    # what the plugin had done when it died: the row says "submitting", the job exists in SLURM
    store = Store(plugin.data_root / "plugin.sqlite")
    job_dir = plugin.data_root / "jobs" / uid
    store.begin_submit(uid, "physics", "crashy", job_dir, '{"init": [], "run": [["main", "busybox"]]}')
    store.close()
    job_dir.mkdir(parents=True)
    script = job_dir / "job.slurm"
    script.write_text("#!/bin/bash\n#SBATCH --job-name=the-pods-own-name\n#SBATCH --output=/dev/null\ntrue\n")
    sbatch_wrap(slurm, uid, "true")  # another job, named like the pod's uid: not this pod's
    jid = sbatch_script(slurm, script)
    plugin.start()
    calls.write_text("")
    async with plugin.client() as c:
        assert (await c.create(retrieved(p))).PodJID == jid
        assert (await c.create(retrieved(p))).PodJID == jid
    assert "sbatch" not in calls.read_text().split()
    assert squeue(slurm, "--states=all", "--name", "the-pods-own-name", "-o", "%i").split() == [jid]


async def test_jobs_slurm_forgot_are_answered_from_exit_files(slurm, plugin_factory) -> None:
    """Without slurmdbd, SLURM forgets a job MinJobAge after it ends: the runner's files still answer; a job
    that left nothing is reported lost (never pending forever)."""
    plugin = plugin_factory(slurm, runtime="none")
    done = pod("forgotten", [container("main", "echo bye; exit 4")])
    async with plugin.client() as c:
        jid = (await c.create(retrieved(done))).PodJID
    for _ in range(100):
        if squeue(slurm, "--states=all", "-j", jid, "-o", "%T").strip() in ("COMPLETED", "FAILED"):
            break
        await asyncio.sleep(0.2)
    plugin.kill(signal.SIGKILL)
    lost = pod("lost", [container("main", "true")])
    db = sqlite3.connect(plugin.data_root / "plugin.sqlite")
    # job ids SLURM never had stand for jobs it has purged
    db.execute("UPDATE pods SET jid = '987654' WHERE uid = ?", (done["metadata"]["uid"],))
    db.execute("INSERT INTO pods (uid, namespace, name, job_dir, jid, phase, created, containers) VALUES "
               "(?, 'physics', 'lost', ?, '987655', 'submitted', 0, ?)",
               (lost["metadata"]["uid"], str(plugin.data_root / "nowhere"), '{"init": [], "run": [["main", "x"]]}'))
    db.commit()
    db.close()
    plugin.start()
    async with plugin.client() as c:
        [st] = await c.status([done])  # a single unknown id: squeue fails on it, the plugin must not
        assert st.containers[0].state.terminated.exitCode == 4
        [st] = await c.status([lost])
        assert st.containers[0].state.terminated.reason == "JobLost"


async def test_concurrent_creates_of_one_pod_submit_once(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm, runtime="none")
    p = pod("racy", [container("main", "true")])
    async with plugin.client() as c:
        answers = await asyncio.gather(*(c.create(retrieved(p)) for _ in range(5)))
    assert len({a.PodJID for a in answers}) == 1
    assert squeue(slurm, "--states=all", "--name", p["metadata"]["uid"], "-o", "%i").split() == [answers[0].PodJID]


async def test_sbatch_timeout_is_looked_up_not_repeated(slurm, plugin_factory, tmp_path) -> None:
    """sbatch that submits but answers too late: /create fails (502), interLink's retry finds the job."""
    slow = tmp_path / "slow-sbatch"
    slow.write_text('#!/bin/bash\nif [[ $1 == sbatch ]]; then "$@"; sleep 3; exit 0; fi\nexec "$@"\n')
    slow.chmod(0o755)
    plugin = plugin_factory(slurm, runtime="none", slurm={"command_prefix": [str(slow)], "command_timeout": 1})
    p = pod("slow", [container("main", "true")])
    async with plugin.client() as c:
        with pytest.raises(PluginError) as err:
            await c.create(retrieved(p))
        assert err.value.status == 502 and "did not answer" in err.value.message
        jid = (await c.create(retrieved(p))).PodJID
    assert squeue(slurm, "--states=all", "--name", p["metadata"]["uid"], "-o", "%i").split() == [jid]


async def test_pods_whose_namespace_and_uid_concatenate_alike_never_share_a_job_dir(slurm, plugin_factory) -> None:
    """Issue 9: namespace `aifacility-a` + uid `b-c-d-e` once landed in the job dir of namespace `aifacility`,
    uid `a-b-c-d-e`, and replaced it. Job dirs are now named by the uid alone, and uids must be UUIDs."""
    plugin = plugin_factory(slurm, runtime="none")
    running_pod = pod("victim", [container("main", "echo victim-started; sleep 600")], namespace="aifacility")
    uid = running_pod["metadata"]["uid"]
    head, _, tail = uid.partition("-")
    async with plugin.client() as c:
        jid = (await c.create(retrieved(running_pod))).PodJID
        await wait_for(c, [running_pod], running)
        job_dir = plugin.data_root / "jobs" / uid
        assert (job_dir / "JobID.jid").read_text().strip() == jid
        # SLURM says RUNNING before the runner has started the container: wait until its files stop changing
        # (the container printed, and the runner wrote what it writes once it runs).
        before: list[str] = []
        for _ in range(120):
            now = sorted(p.name for p in job_dir.rglob("*"))
            out = job_dir / "ctn" / "run-main.out"
            if now == before and out.exists() and "victim-started" in out.read_text():
                break
            before = now
            await asyncio.sleep(0.5)
        # the request: same concatenation `aifacility-<uid>`, with the rest of the uid as its uid
        forged = pod("forged", [container("main", "echo forged")], namespace=f"aifacility-{head}", uid=tail)
        with pytest.raises(PluginError) as err:
            await c.create(retrieved(forged))
        assert err.value.status == 400 and "pod.metadata.uid" in err.value.message
        # a valid pod in that namespace gets its own dir beside the first
        neighbour = pod("neighbour", [container("main", "echo neighbour")], namespace=f"aifacility-{head}")
        await c.create(retrieved(neighbour))
        [st] = await wait_for(c, [neighbour], finished)
        assert st.containers[0].state.terminated.exitCode == 0
        assert (plugin.data_root / "jobs" / neighbour["metadata"]["uid"]).is_dir()
        # the running pod lost nothing: its dir, files, log and job are as they were
        assert sorted(p.name for p in job_dir.rglob("*")) == before
        assert (await c.logs(log_req(running_pod, "main"))).strip() == "victim-started"
        [st] = await c.status([running_pod])
        assert st.containers[0].state.running is not None and st.JID == jid
        assert squeue(slurm, "-j", jid, "-o", "%T").strip() == "RUNNING"
        await c.delete(running_pod)
        await left_squeue(slurm, jid)


async def test_job_dirs_of_the_old_layout_keep_working(slurm, plugin_factory) -> None:
    """A pod submitted by a plugin from before uid-keyed dirs (`<data-root>/<namespace>-<uid>`) is still
    answered, logged and deleted from its old dir after an upgrade."""
    plugin = plugin_factory(slurm, runtime="none")
    p = pod("legacy", [container("main", "echo from-the-old-layout; exit 2")])
    uid = p["metadata"]["uid"]
    async with plugin.client() as c:
        await c.create(retrieved(p))
        await wait_for(c, [p], finished)
    plugin.kill(signal.SIGKILL)
    old = plugin.data_root / f"physics-{uid}"
    (plugin.data_root / "jobs" / uid).rename(old)
    db = sqlite3.connect(plugin.data_root / "plugin.sqlite")
    db.execute("UPDATE pods SET job_dir = ?, final_status = NULL WHERE uid = ?", (str(old), uid))
    db.commit()
    db.close()
    plugin.start()
    async with plugin.client() as c:
        [st] = await c.status([p])  # answered from the exit-status file in the old dir
        assert st.containers[0].state.terminated.exitCode == 2
        assert (await c.logs(log_req(p, "main"))).strip() == "from-the-old-layout"
        await c.delete(p)
    for _ in range(40):
        if not old.exists():
            break
        await asyncio.sleep(0.25)
    assert not old.exists()


async def test_every_request_is_in_the_access_log(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm, runtime="none")
    p = pod("logged", [container("main", "echo hi")])
    md = p["metadata"]
    async with plugin.client() as c:
        jid = (await c.create(retrieved(p))).PodJID
        await wait_for(c, [p], finished)
        await c.logs(log_req(p, "main"))
        await c.delete(p)
        with pytest.raises(PluginError):
            await c.logs(log_req(p, "nope"))
        refused = pod("refused", [container("main", "true")], annotations={"slurm-job.vk.io/flags": "--wrap=x"})
        with pytest.raises(PluginError):
            await c.create(retrieved(refused))
    lines = plugin.access_log()
    no = next(f for f in lines if f["path"] == "/create" and f["status"] == "400")
    assert no["uid"] == refused["metadata"]["uid"] and no["pod"] == "refused"
    assert "--wrap cannot be used" in no["reason"]
    create = next(f for f in lines if f["path"] == "/create" and f["status"] == "200")
    assert create == {"method": "POST", "path": "/create", "status": "200", "ms": create["ms"],
                      "namespace": md["namespace"], "pod": md["name"], "uid": md["uid"], "jid": jid,
                      "client": create["client"]}
    assert float(create["ms"]) > 0
    status = next(f for f in lines if f["path"] == "/status")
    assert (status["status"], status["pods"], status["uid"]) == ("200", "1", md["uid"])
    logs = [f for f in lines if f["path"] == "/getLogs"]
    assert logs[0]["container"] == "main" and logs[0]["status"] == "200"
    assert logs[-1]["status"] in ("404", "410") and logs[-1]["uid"] == md["uid"]
    assert [f["status"] for f in lines if f["path"] == "/delete"] == ["200"]
    assert plugin.token is not None and plugin.token not in plugin.log.read_text()
