"""The jobs service's count of each user's unfinished jobs (its per-user limit), kept by a list and watch of the
Jobs with the hub's own identity: it follows creations, completions and deletions, and falls back to listing
while the watch is out of step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import config

from aifacility.facility import load_facility
from aifacility.jobs.cluster import JobsCluster
from aifacility.jobs.manifest import MANAGED_BY, USER_LABEL
from support.controlplane import Cluster

NS = "aifacility"


def _job(name: str, user: str, *, suspend: bool) -> dict[str, Any]:
    # No queue label: Kueue leaves these alone, so a suspended one waits and an unsuspended one runs `true`.
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "labels": {**MANAGED_BY, USER_LABEL: user}},
            "spec": {"suspend": suspend, "backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "busybox", "command": ["true"],
                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


async def _until(what: Callable[[], Any], seconds: float = 60) -> Any:
    for _ in range(int(seconds / 0.1)):
        value = what()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {what()!r} after {seconds} s")


async def test_the_watch_counts_unfinished_jobs_per_user(cluster: Cluster) -> None:
    api = await config.new_client_from_config(config_file=str(cluster.embedded.hub_kubeconfig))
    jobs = JobsCluster(api, load_facility(None))
    watching = asyncio.create_task(jobs.unfinished_jobs.run())
    names = ["unfinished-waits", "unfinished-ends", "unfinished-other"]
    try:
        await _until(lambda: jobs.unfinished_jobs.count("watcher") is not None)
        assert jobs.unfinished_jobs.count("watcher") == 0
        cluster.apply(_job(names[0], "watcher", suspend=True), _job(names[1], "watcher", suspend=False),
                      _job(names[2], "someone-else", suspend=True))
        # Both of the user's jobs are seen; the one that runs `true` then ends and is no longer counted.
        await _until(lambda: names[1] in jobs.unfinished_jobs._jobs and names[0] in jobs.unfinished_jobs._jobs)
        await _until(lambda: jobs.unfinished_jobs.count("watcher") == 1, seconds=120)
        assert jobs.unfinished_jobs.count("someone-else") == 1
        # The fallback (the API server's table of jobs) agrees with the watch.
        assert await jobs.unfinished("watcher") == 1
        jobs.unfinished_jobs._synced = False
        assert await jobs.unfinished("watcher") == 1
        jobs.unfinished_jobs._synced = True

        cluster.kubectl("delete", "job", "-n", NS, names[0], "--wait=false")
        await _until(lambda: jobs.unfinished_jobs.count("watcher") == 0)

        # A watch that breaks (here: cancelled and restarted) lists again and is back in step.
        watching.cancel()
        jobs.unfinished_jobs._synced = False
        watching = asyncio.create_task(jobs.unfinished_jobs.run())
        await _until(lambda: jobs.unfinished_jobs.count("someone-else") == 1)
        assert jobs.unfinished_jobs.count("watcher") == 0
    finally:
        watching.cancel()
        await api.close()
        for name in names:
            cluster.kubectl("delete", "job", "-n", NS, name, "--wait=false", "--ignore-not-found")
