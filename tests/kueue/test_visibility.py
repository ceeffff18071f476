"""The visibility API over HTTP, read with the hub's client (kubernetes_asyncio) through the position helper."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client as k8s
from kueue_helpers import NS, pod, setup_queues

from aifacility.devcluster.api import make_app
from aifacility.devcluster.kinds import LOCALQUEUE, POD
from aifacility.devcluster.kueue import KueueController, make_visibility_extension
from aifacility.devcluster.store import Store
from aifacility.kueue import cluster_queue_positions, find_owner, local_queue_positions

PREFIX = "/apis/visibility.kueue.x-k8s.io/v1beta2"


@pytest.fixture
async def server(store: Store) -> AsyncIterator[TestServer]:
    app = make_app(store, extensions=[make_visibility_extension(store)])
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def api(server: TestServer) -> AsyncIterator[k8s.ApiClient]:
    config = k8s.Configuration(host=str(server.make_url("")).rstrip("/"))
    async with k8s.ApiClient(config) as client:
        yield client


async def test_positions_in_local_and_cluster_queue(store: Store, kueue: KueueController,
                                                    api: k8s.ApiClient) -> None:
    setup_queues(store, {"pool-a": "1"}, lq="alice")
    store.create(POD, pod("running", queue="alice"))
    await kueue.settle()
    store.create(LOCALQUEUE, {"metadata": {"name": "bob", "namespace": NS}, "spec": {"clusterQueue": "cq"}})
    for name, queue in (("a1", "alice"), ("b1", "bob"), ("a2", "alice")):
        store.create(POD, pod(name, queue=queue))
    await kueue.settle()

    everyone = await cluster_queue_positions(api, "cq")
    assert [(p.owner_name, p.local_queue, p.position_in_cluster_queue, p.position_in_local_queue)
            for p in everyone] == [("a1", "alice", 0, 0), ("b1", "bob", 1, 0), ("a2", "alice", 2, 1)]
    alice = await local_queue_positions(api, NS, "alice")
    assert [p.owner_name for p in alice] == ["a1", "a2"]
    mine = find_owner(alice, "Pod", "a2")
    assert mine is not None and mine.position_in_cluster_queue == 2 and mine.position_in_local_queue == 1
    assert find_owner(alice, "Pod", "running") is None  # admitted: not pending any more
    assert [p.owner_name for p in await cluster_queue_positions(api, "cq", offset=1, limit=1)] == ["b1"]

    store.delete(POD, NS, "running")
    await kueue.settle()
    assert [p.owner_name for p in await local_queue_positions(api, NS, "alice")] == ["a2"]


async def test_errors_and_discovery(store: Store, server: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url(f"{PREFIX}/clusterqueues/nope/pendingworkloads")) as r:
            body = await r.json()
            assert r.status == 404 and body["kind"] == "Status"
            assert body["message"] == 'clusterqueues.visibility.kueue.x-k8s.io "nope" not found'
        async with http.get(server.make_url(f"{PREFIX}/namespaces/{NS}/localqueues/nope/pendingworkloads")) as r:
            assert r.status == 404
        setup_queues(store, {"pool-a": "1"})
        async with http.get(server.make_url(f"{PREFIX}/clusterqueues/cq/pendingworkloads?limit=-2")) as r:
            assert r.status == 400
            assert "limit must be a whole number of 0 or more" in (await r.json())["message"]
        async with http.get(server.make_url(f"{PREFIX}/clusterqueues/cq/pendingworkloads")) as r:
            assert await r.json() == {"kind": "PendingWorkloadsSummary", "items": [],
                                      "apiVersion": "visibility.kueue.x-k8s.io/v1beta2",
                                      "metadata": {"creationTimestamp": None}}
        async with http.get(server.make_url(PREFIX)) as r:
            names = {res["name"] for res in (await r.json())["resources"]}
            assert {"clusterqueues/pendingworkloads", "localqueues/pendingworkloads"} <= names
