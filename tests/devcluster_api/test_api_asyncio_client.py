"""kubernetes_asyncio as KubeSpawner uses it: its own PodReflector/EventReflector, and CustomObjectsApi patches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.client.rest import ApiException

LABELS = {"component": "singleuser-server", "app": "jupyterhub"}


def _pod(name: str, labels: dict[str, str]) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "notebook", "image": "jupyter/base-notebook"}]},
    }


@pytest.fixture
async def api(server) -> AsyncIterator[client.ApiClient]:
    """Global kubernetes_asyncio configuration pointing at the server, as KubeSpawner's load_config sets it."""
    saved = Configuration.get_default_copy()
    await config.load_kube_config(config_file=str(server.kubeconfig))
    api_client = client.ApiClient()
    yield api_client
    await api_client.close()
    Configuration.set_default(saved)


async def _until(predicate: Callable[[], bool], within: float = 10) -> None:
    """Poll state that a reflector updates from its own task (it offers no notification to wait on)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_kubespawner_reflectors_follow_pods_and_events(api, server):
    from kubespawner.spawner import EventReflector, PodReflector

    core = client.CoreV1Api(api)
    await core.create_namespaced_pod("default", _pod("jupyter-alice", LABELS))
    await core.create_namespaced_pod("default", _pod("unrelated", {"app": "other"}))
    # timeout_seconds=1 makes the reflector re-list and re-watch from its resourceVersion several times.
    pods = PodReflector(namespace="default", labels=LABELS, timeout_seconds=1)
    events = EventReflector(namespace="default", fields={"involvedObject.kind": "Pod"}, timeout_seconds=1)
    await pods.start()
    await events.start()
    try:
        assert set(pods.pods) == {"default/jupyter-alice"}
        await core.create_namespaced_pod("default", _pod("jupyter-bob", LABELS))
        await _until(lambda: "default/jupyter-bob" in pods.pods)
        await asyncio.sleep(1.5)  # across a watch restart
        await core.patch_namespaced_pod_status(
            "jupyter-bob", "default", {"status": {"phase": "Running", "podIP": "127.0.10.2"}}
        )
        await _until(lambda: pods.pods["default/jupyter-bob"]["status"].get("podIP") == "127.0.10.2")
        await core.create_namespaced_event(
            "default",
            {
                "metadata": {"name": "jupyter-bob.1"},
                "involvedObject": {"kind": "Pod", "name": "jupyter-bob", "namespace": "default"},
                "reason": "Scheduled",
                "message": "assigned to node-1",
                "type": "Normal",
            },
        )
        await core.create_namespaced_event(
            "default",
            {
                "metadata": {"name": "job.1"},
                "involvedObject": {"kind": "Job", "name": "x", "namespace": "default"},
                "reason": "Other",
                "message": "not a pod event",
                "type": "Normal",
            },
        )
        await _until(lambda: any(e["reason"] == "Scheduled" for e in events.events))
        assert all(e["involvedObject"]["kind"] == "Pod" for e in events.events)
        await core.delete_namespaced_pod("jupyter-bob", "default")
        await _until(lambda: "default/jupyter-bob" not in pods.pods)
        assert "default/unrelated" not in pods.pods
    finally:
        await pods.stop()
        await events.stop()


async def test_list_and_watch_like_the_reflector(api):
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod("default", _pod("first", LABELS))
    raw = await core.list_namespaced_pod(
        "default",
        label_selector="component=singleuser-server",
        _preload_content=False,
        resource_version="0",
        resource_version_match="NotOlderThan",
    )
    assert raw.ok
    listed = json.loads(await raw.read())
    rv = listed["metadata"]["resourceVersion"]
    assert [p["metadata"]["name"] for p in listed["items"]] == ["first"]

    async def changes() -> None:
        await asyncio.sleep(0.2)
        await core.create_namespaced_pod("default", _pod("second", LABELS))
        await core.create_namespaced_pod("default", _pod("ignored", {"component": "other"}))
        await core.delete_namespaced_pod("second", "default")

    task = asyncio.create_task(changes())
    seen = []
    w = watch.Watch()
    method = partial(core.list_namespaced_pod, _preload_content=False)
    async with w.stream(
        method,
        namespace="default",
        label_selector="component=singleuser-server",
        resource_version=rv,
        timeout_seconds=2,
    ) as stream:
        async for event in stream:
            seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
    await task
    assert seen == [("ADDED", "second"), ("DELETED", "second")]


async def test_custom_objects_patch_content_types(api):
    custom = client.CustomObjectsApi(api)
    args = ("kueue.x-k8s.io", "v1beta2", "default", "localqueues")
    await custom.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "lq"},
            "spec": {"clusterQueue": "cq"},
        },
    )
    # The trap: a dict body is sent as application/json-patch+json, which must be an array of operations.
    with pytest.raises(ApiException) as trap:
        await custom.patch_namespaced_custom_object(*args, "lq", {"metadata": {"labels": {"a": "b"}}})
    assert trap.value.status == 400
    assert "JSON patch must be a JSON array" in json.loads(trap.value.body)["message"]
    merged = await custom.patch_namespaced_custom_object(
        *args, "lq", {"metadata": {"labels": {"a": "b"}}}, _content_type="application/merge-patch+json"
    )
    assert merged["metadata"]["labels"] == {"a": "b"}
    ops = [{"op": "replace", "path": "/spec/clusterQueue", "value": "cq2"}]
    patched = await custom.patch_namespaced_custom_object(*args, "lq", ops)
    assert patched["spec"]["clusterQueue"] == "cq2"
