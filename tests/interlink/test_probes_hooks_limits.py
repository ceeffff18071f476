"""Offloaded pods as interLink's users validate a site: probes, lifecycle hooks, the pod's own sbatch flags and
memory limits, against the real SLURM (runtime bwrap)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from interlink_helpers import container, finished, pod, retrieved, running, scontrol_job, squeue, wait_for

from aifacility_interlink.client import PluginError

pytestmark = pytest.mark.slurm

SCRATCH = [{"name": "scratch", "emptyDir": {}}]


def sh(*script: str) -> dict[str, Any]:
    return {"exec": {"command": ["sh", "-c", " ".join(script)]}}


def probe(action: dict[str, Any], **timing: int) -> dict[str, Any]:
    return {**action, "periodSeconds": 1, **timing}


def log_req(p: dict[str, Any], name: str) -> dict[str, Any]:
    md = p["metadata"]
    return {"Namespace": md["namespace"], "PodUID": md["uid"], "PodName": md["name"], "ContainerName": name,
            "Opts": {}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_readiness_probe_holds_ready_until_it_passes(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    c = container("app", "sleep 8; touch /tmp/ready; echo ready-now; sleep 60")
    c["readinessProbe"] = probe(sh("test -e /tmp/ready"))
    c["startupProbe"] = probe(sh("true"))
    p = pod("ready-after-8s", [c])
    async with plugin.client() as client:
        await client.create(retrieved(p))
        [st] = await wait_for(client, [p], running, within=60)
        t_running = time.monotonic()
        seen_unready_running = False
        while True:
            [st] = await client.status([p])
            cs = st.containers[0]
            assert cs.state.running is not None, cs
            if cs.ready:
                break
            seen_unready_running = True
            assert time.monotonic() - t_running < 30, "never became ready"
            await asyncio.sleep(0.3)
        waited = time.monotonic() - t_running
        # Not before the container's 8 s (less the poll interval it may have been seen late), not long after.
        assert seen_unready_running and 7.0 <= waited <= 14.0, waited
        assert cs.started is True and cs.restartCount == 0
        assert (await client.logs(log_req(p, "app"))).strip() == "ready-now"
        await client.delete(p)


async def test_liveness_failure_restarts_the_container_after_its_prestop_hook(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    c = container("svc", "n=$(cat /scratch/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /scratch/runs; "
                         "echo run $n; [ -e /scratch/prestop ] && echo prestop-ran-before-restart; "
                         "if [ $n -ge 2 ]; then touch /scratch/healthy; sleep 3; exit 0; fi; sleep 300",
                  [("scratch", "/scratch")])
    c["livenessProbe"] = probe(sh("test -e /scratch/healthy"), initialDelaySeconds=1, failureThreshold=2)
    c["lifecycle"] = {"preStop": sh("echo stopping > /scratch/prestop")}
    p = pod("liveness", [c], volumes=SCRATCH)
    p["spec"]["terminationGracePeriodSeconds"] = 2
    async with plugin.client() as client:
        await client.create(retrieved(p))
        # the kubelet's back-off: killed after ~3 s, waits 10 s, runs again and ends by itself
        [st] = await wait_for(client, [p], lambda s: s.containers[0].restartCount == 1, within=60)
        [st] = await wait_for(client, [p], finished, within=60)
        cs = st.containers[0]
        assert cs.restartCount == 1
        assert cs.state.terminated.exitCode == 0 and cs.state.terminated.reason == "Completed"
        last = cs.lastState.terminated
        assert last is not None and last.exitCode in (137, 143) and "liveness probe" in last.message
        assert (await client.logs(log_req(p, "svc"))).splitlines() == ["run 1", "run 2", "prestop-ran-before-restart"]


async def test_liveness_failure_with_restart_policy_never_ends_the_container(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    c = container("svc", "echo up; sleep 300")
    c["livenessProbe"] = probe({"tcpSocket": {"port": free_port()}}, failureThreshold=2)  # nothing listens
    p = pod("liveness-never", [c])
    p["spec"].update(restartPolicy="Never", terminationGracePeriodSeconds=1)
    async with plugin.client() as client:
        await client.create(retrieved(p))
        [st] = await wait_for(client, [p], finished, within=60)
        t = st.containers[0].state.terminated
        assert t.exitCode in (137, 143) and t.reason == "Error" and "liveness probe" in t.message
        assert st.containers[0].restartCount == 0


async def test_http_and_tcp_probes_reach_the_containers_server(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    port = free_port()
    c = container("web", f"sleep 2; exec python3 -m http.server {port} --bind 127.0.0.1")
    c["ports"] = [{"name": "http", "containerPort": port}]
    c["readinessProbe"] = probe({"httpGet": {"path": "/", "port": "http",
                                             "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}})
    c["livenessProbe"] = probe({"tcpSocket": {"port": port}}, initialDelaySeconds=5)
    p = pod("web", [c])
    async with plugin.client() as client:
        await client.create(retrieved(p))
        [st] = await wait_for(client, [p], lambda s: s.containers[0].ready, within=60)
        await asyncio.sleep(7)  # the liveness probe has run a few times by now, and passed
        [st] = await client.status([p])
        assert st.containers[0].ready and st.containers[0].restartCount == 0
        assert st.containers[0].state.running is not None
        await client.delete(p)


async def test_post_start_hook_runs_before_the_container(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    c = container("main", "cat /scratch/marker /tmp/marker")
    c["lifecycle"] = {"postStart": sh("echo prepared > /scratch/marker; echo in-tmp > /tmp/marker")}
    p = pod("poststart", [c], volumes=SCRATCH)
    c["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    failing = container("main", "echo should-not-run")
    failing["lifecycle"] = {"postStart": sh("exit 1")}
    q = pod("poststart-fails", [failing])
    q["spec"]["restartPolicy"] = "Never"
    async with plugin.client() as client:
        await client.create(retrieved(p))
        await client.create(retrieved(q))
        st, sq = await wait_for(client, [p, q], finished, within=60)
        assert st.containers[0].state.terminated.exitCode == 0
        assert (await client.logs(log_req(p, "main"))).splitlines() == ["prepared", "in-tmp"]
        t = sq.containers[0].state.terminated
        assert t.exitCode != 0 and "postStart hook failed" in t.message
        assert (await client.logs(log_req(q, "main"))) == ""


async def test_probes_the_site_cannot_run_are_refused_with_a_message(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    grpc = container("c", "true")
    grpc["livenessProbe"] = {"grpc": {"port": 9000}}
    named = container("c", "true")
    named["readinessProbe"] = {"httpGet": {"port": "metrics"}}
    async with plugin.client() as client:
        with pytest.raises(PluginError) as e1:
            await client.create(retrieved(pod("grpc", [grpc])))
        assert e1.value.status == 400 and "grpc, which offloaded pods do not support" in e1.value.message
        with pytest.raises(PluginError) as e2:
            await client.create(retrieved(pod("named", [named])))
        assert e2.value.status == 400 and "names port 'metrics'" in e2.value.message


async def test_the_pods_own_job_name_is_honoured_and_locked_flags_refused(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    p = pod("named-job", [container("c", "echo $SLURM_JOB_NAME")],
            annotations={"slurm-job.vk.io/flags": "--job-name=validation-run -t 5"})
    locked = pod("pinned", [container("c", "true")], annotations={"slurm-job.vk.io/flags": "-p other"})
    async with plugin.client() as client:
        created = await client.create(retrieved(p))
        [st] = await wait_for(client, [p], finished, within=60)
        assert st.containers[0].state.terminated.exitCode == 0
        assert "JobName=validation-run" in scontrol_job(slurm, created.PodJID)
        assert (await client.logs(log_req(p, "c"))).strip() == "validation-run"
    site = plugin_factory(slurm, slurm={"locked_flags": ["--partition"]})
    async with site.client() as client:
        with pytest.raises(PluginError) as e:
            await client.create(retrieved(locked))
        assert e.value.status == 400
        assert "--partition is locked by this site (slurm.locked_flags" in e.value.message


async def test_a_container_over_its_memory_limit_is_oom_killed(slurm, plugin_factory) -> None:
    plugin = plugin_factory(slurm)
    hog = container("hog", "echo start; python3 -c 'b = bytearray(300 * 2**20); b[::4096] = b\"x\" * len(b[::4096]);"
                           " print(\"survived\")'", limits={"memory": "64Mi"})
    p = pod("oom", [hog])
    async with plugin.client() as client:
        created = await client.create(retrieved(p))
        [st] = await wait_for(client, [p], finished, within=60)
        t = st.containers[0].state.terminated
        assert "survived" not in await client.logs(log_req(p, "hog"))
        if slurm.cgroups:
            assert (t.exitCode, t.reason) == (137, "OOMKilled"), t
            assert "JobState=OUT_OF_MEMORY" in scontrol_job(slurm, created.PodJID)
        else:  # polled enforcement (see localslurm.py): killed, without the kernel's OOM verdict
            assert t.exitCode != 0, t



async def test_delete_runs_pre_stop_then_terms_the_container(slurm, plugin_factory, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plugin = plugin_factory(slurm, host_path_prefixes=[str(tmp_path)])
    polite = container("polite", "trap 'echo got-term >> /out/log; exit 0' TERM; echo up >> /out/log; "
                                 "while :; do sleep 0.2; done", [("out", "/out")])
    polite["lifecycle"] = {"preStop": sh("echo pre-stop >> /out/log")}
    stubborn = container("stubborn", "trap '' TERM; while :; do sleep 0.2; done")
    p = pod("graceful", [polite, stubborn], volumes=[{"name": "out", "hostPath": {"path": str(out)}}])
    p["spec"]["terminationGracePeriodSeconds"] = 10  # preStop and TERM well within it, even on a loaded machine
    async with plugin.client() as client:
        created = await client.create(retrieved(p))
        await wait_for(client, [p], lambda s: all(c.state.running for c in s.containers), within=60)
        await wait_for(client, [p], lambda s: (out / "log").exists(), within=10)
        message = await client.delete(p)
        assert "asked to stop" in message
        for _ in range(200):  # the stubborn one is killed after the grace period
            if not squeue(slurm, "-j", created.PodJID, "-o", "%T").strip():
                break
            await asyncio.sleep(0.2)
        assert not squeue(slurm, "-j", created.PodJID, "-o", "%T").strip()
    assert (out / "log").read_text().splitlines() == ["up", "pre-stop", "got-term"]
    assert "JobState=CANCELLED" not in scontrol_job(slurm, created.PodJID)  # it ended by itself, gracefully
