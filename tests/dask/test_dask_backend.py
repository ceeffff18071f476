"""The backend's six operations against an in-memory API server, and the clusters-per-user limit under
concurrent requests (dask-gateway's own database, in memory; no proxy, no cluster)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import DataManager
from dask_gateway_server.models import User
from dask_gateway_server.workqueue import WorkQueue

from aifacility.dask import pods
from aifacility.dask.backend import FacilityBackend
from aifacility.dask.config import cluster_options
from aifacility.facility import load_facility

FAC = load_facility()
API_URL = "http://127.0.0.1:18000/services/dask-gateway/api"


class FakeKube:
    """Objects by (kind, name); pods Pending until a test says otherwise."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.uids = itertools.count(1)
        self.claims_for: list[tuple[str, list[str]]] = []

    async def ensure_claims(self, facility: Any, user: str, groups: list[str]) -> None:
        self.claims_for.append((user, groups))

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        key = (body["kind"], body["metadata"]["name"])
        assert key not in self.objects, f"{key} exists"
        obj = {**body, "metadata": {**body["metadata"], "uid": f"uid-{next(self.uids)}"},
               "status": {"phase": "Pending"}}
        self.objects[key] = obj
        return obj

    async def set_owner(self, secret: str, owner: list[dict[str, Any]]) -> None:
        self.objects[("Secret", secret)]["metadata"]["ownerReferences"] = owner

    async def delete(self, kind: str, name: str) -> None:
        self.objects.pop((kind, name), None)

    def _matching(self, selector: str) -> list[tuple[str, str]]:
        want = dict(kv.split("=", 1) for kv in selector.split(","))
        return [k for k, o in self.objects.items()
                if k[0] == "Pod" and all(o["metadata"]["labels"].get(a) == b for a, b in want.items())]

    async def delete_pods(self, selector: str) -> None:
        for k in self._matching(selector):
            del self.objects[k]

    async def phases(self, selector: str) -> dict[str, str]:
        return {k[1]: self.objects[k]["status"]["phase"] for k in self._matching(selector)}

    async def close(self) -> None:
        pass


@pytest.fixture
def backend() -> FacilityBackend:
    b = FacilityBackend(facility=FAC, kube=FakeKube(), cluster_options=cluster_options(FAC), api_url=API_URL)
    b.db = DataManager()
    return b


async def new_cluster(b: FacilityBackend, user: User, **options: Any) -> Any:
    _, config = await b.process_cluster_options(user, options)
    return b.db.create_cluster(user.name, options, config.to_dict())


async def drain(gen: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [state async for state in gen]


async def test_a_cluster_is_a_secret_and_an_unqueued_scheduler_pod(backend: FacilityBackend) -> None:
    cluster = await new_cluster(backend, User("alice", ["physics"]))
    states = await drain(backend.do_start_cluster(cluster))
    kube = backend.kube
    pod = kube.objects[("Pod", pods.scheduler_name(cluster.name))]
    secret = kube.objects[("Secret", pods.secret_name(cluster.name))]
    assert states[-1]["owner"][0]["uid"] == pod["metadata"]["uid"] == secret["metadata"]["ownerReferences"][0]["uid"]
    c = pod["spec"]["containers"][0]
    assert c["command"][:2] == ["dask", "scheduler"] and "$(POD_IP)" in c["command"]
    assert "dask_gateway.scheduler_preload" in c["command"]
    idle = c["command"][c["command"].index("--dg-idle-timeout") + 1]
    assert float(idle) == FAC.dask.idle_timeout_minutes * 60  # idle timeout on
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["DASK_GATEWAY_API_URL"] == API_URL and env["DASK_GATEWAY_CLUSTER_NAME"] == cluster.name
    assert env["DASK_GATEWAY_API_TOKEN"] == pods.TOKEN and cluster.token not in str(pod)
    assert secret["stringData"]["api-token"] == cluster.token
    assert "kueue.x-k8s.io/queue-name" not in pod["metadata"]["labels"]


async def test_workers_connect_to_the_reported_scheduler_address(backend: FacilityBackend) -> None:
    cluster = await new_cluster(backend, User("alice", ["ml"]), accelerator="mig-1g-10gb", worker_cores=3)
    cluster.state = (await drain(backend.do_start_cluster(cluster)))[-1]
    cluster.scheduler_address = "tls://10.200.0.7:40123"  # what the scheduler's heartbeat reported
    worker = backend.db.create_worker(cluster)
    await drain(backend.do_start_worker(worker))
    pod = backend.kube.objects[("Pod", pods.worker_name(worker.name))]
    c = pod["spec"]["containers"][0]
    assert c["command"][:3] == ["dask", "worker", "tls://10.200.0.7:40123"]
    assert c["command"][c["command"].index("--nthreads") + 1] == "3"
    assert c["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "ml"
    assert pod["metadata"]["ownerReferences"] == cluster.state["owner"]
    assert backend.kube.claims_for == [("alice", ["ml"])]  # her home and group claims, before the worker pod


async def test_checks_and_stops(backend: FacilityBackend) -> None:
    kube = backend.kube
    a, b = [await new_cluster(backend, User(u, ["physics"])) for u in ("alice", "bob")]
    for c in (a, b):
        c.state = (await drain(backend.do_start_cluster(c)))[-1]
        c.scheduler_address = "tls://10.200.0.9:1"
    kube.objects[("Pod", pods.scheduler_name(b.name))]["status"]["phase"] = "Failed"
    assert await backend.do_check_clusters([a, b]) == [True, False]
    w1, w2 = backend.db.create_worker(a), backend.db.create_worker(a)
    for w in (w1, w2):
        await drain(backend.do_start_worker(w))
    await backend.do_stop_worker(w2)
    assert await backend.do_check_workers([w1, w2]) == [True, False]  # a gated (Pending) worker is alive
    await backend.do_stop_cluster(a)
    assert not any(a.name in name for _, name in kube.objects)
    assert await backend.do_check_workers([]) == [] and await backend.do_check_clusters([]) == []


async def test_options_handler_refusals_reach_the_user(backend: FacilityBackend) -> None:
    with pytest.raises(PublicException, match="allows at most 8 cores"):
        await backend.process_cluster_options(User("alice", ["physics"]), {"worker_cores": 16})
    with pytest.raises(PublicException, match="Unknown fields"):
        await backend.process_cluster_options(User("alice", ["physics"]), {"image": "mine"})


async def test_at_most_n_clusters_per_user_and_group_even_when_asked_at_once(backend: FacilityBackend) -> None:
    backend.queue = WorkQueue()
    alice = User("alice", ["physics", "ml"])
    results = await asyncio.gather(*(backend.start_cluster(alice, {"group": "physics"}) for _ in range(5)),
                                   return_exceptions=True)
    created = [r for r in results if isinstance(r, str)]
    refusals = [r for r in results if isinstance(r, PublicException)]
    assert len(created) == FAC.dask.limits("physics").max_clusters_per_user == 3
    assert len(refusals) == 2 and "already have 3 Dask cluster(s)" in str(refusals[0])
    await backend.start_cluster(alice, {"group": "ml"})  # another group counts apart
    await backend.start_cluster(User("bob", ["physics"]), {})  # and so does another user
    await backend.stop_cluster(created[0])  # a stopping cluster no longer counts
    await backend.start_cluster(alice, {"group": "physics"})
    backend.queue.close()
