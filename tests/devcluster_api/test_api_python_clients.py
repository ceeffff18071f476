"""The `kubernetes` (sync) and `kubernetes_asyncio` clients against the devcluster API server."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

KUEUE = ("kueue.x-k8s.io", "v1beta2")


def _pod(name: str, labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "30"]}]},
    }


def test_core_crud_and_errors(k8s):
    core = client.CoreV1Api(k8s)
    created = core.create_namespaced_pod("default", _pod("a", {"app": "x"}))
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    generated = core.create_namespaced_pod("default", {**_pod(""), "metadata": {"generateName": "nb-"}})
    assert generated.metadata.name.startswith("nb-") and len(generated.metadata.name) == 8

    with pytest.raises(ApiException) as exists:
        core.create_namespaced_pod("default", _pod("a"))
    assert exists.value.status == 409 and json.loads(exists.value.body)["reason"] == "AlreadyExists"

    stale = core.read_namespaced_pod("a", "default")
    fresh = core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"v": "2"}}})
    assert int(fresh.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.metadata.labels["v"] = "3"
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_pod("a", "default", stale)
    body = json.loads(conflict.value.body)
    assert conflict.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    fresh.metadata.labels["v"] = "3"
    assert core.replace_namespaced_pod("a", "default", fresh).metadata.labels["v"] == "3"

    with pytest.raises(ApiException) as bad_name:
        core.create_namespaced_pod("default", _pod("Not_Valid"))
    body = json.loads(bad_name.value.body)
    assert bad_name.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Pod "Not_Valid" is invalid: metadata.name: Invalid value: "Not_Valid"')
    assert body["details"]["causes"][0]["field"] == "metadata.name"

    with pytest.raises(ApiException) as no_image:
        core.create_namespaced_pod("default", {**_pod("b"), "spec": {"containers": [{"name": "main"}]}})
    assert "spec.containers[0].image: Required value" in json.loads(no_image.value.body)["message"]

    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", "default")
    assert missing.value.status == 404 and json.loads(missing.value.body)["message"] == 'pods "nope" not found'

    listed = core.list_namespaced_pod("default", label_selector="app=x")
    assert [p.metadata.name for p in listed.items] == ["a"]
    page = core.list_namespaced_pod("default", limit=1)
    assert len(page.items) == 1 and page.metadata._continue
    rest = core.list_namespaced_pod("default", limit=1, _continue=page.metadata._continue)
    assert {page.items[0].metadata.name, rest.items[0].metadata.name} == {"a", generated.metadata.name}

    status = core.delete_namespaced_pod("a", "default", grace_period_seconds=0)
    assert status.metadata.name == "a"
    core.delete_collection_namespaced_pod("default")
    assert core.list_namespaced_pod("default").items == []


def test_malformed_body_is_400(k8s, server):
    import urllib.request

    for payload, ctype in ((b"{not json", "application/json"), (b"[1,2]", "application/json")):
        req = urllib.request.Request(
            f"{server.url}/api/v1/namespaces/default/pods",
            data=payload,
            method="POST",
            headers={"Content-Type": ctype},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        body = json.loads(err.value.read())
        assert err.value.code == 400 and body["kind"] == "Status" and body["reason"] == "BadRequest"
    req = urllib.request.Request(
        f"{server.url}/api/v1/namespaces/default/pods/x",
        data=b"{}",
        method="PATCH",
        headers={"Content-Type": "text/plain"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 415


def test_status_subresource_and_generation(k8s):
    batch = client.BatchV1Api(k8s)
    job = batch.create_namespaced_job(
        "default",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
            },
        },
    )
    assert job.metadata.generation == 1 and job.spec.backoff_limit == 6
    # status is ignored on the main resource and written through /status
    patched = batch.patch_namespaced_job("default" and "j", "default", {"status": {"active": 1}})
    assert patched.status is None or patched.status.active is None
    with_status = batch.patch_namespaced_job_status("j", "default", {"status": {"active": 1}})
    assert with_status.status.active == 1 and with_status.metadata.generation == 1
    suspended = batch.patch_namespaced_job("j", "default", {"spec": {"suspend": True}})
    assert suspended.metadata.generation == 2 and suspended.status.active == 1


def test_custom_objects_kueue(k8s):
    custom = client.CustomObjectsApi(k8s)
    custom.create_cluster_custom_object(
        *KUEUE,
        "resourceflavors",
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "gpu-a100"},
            "spec": {"nodeLabels": {"gpu": "a100"}},
        },
    )
    custom.create_namespaced_custom_object(
        *KUEUE,
        "default",
        "localqueues",
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "lq"},
            "spec": {"clusterQueue": "cq"},
        },
    )
    patched = custom.patch_namespaced_custom_object(
        *KUEUE, "default", "localqueues", "lq", {"metadata": {"labels": {"a": "b"}}}
    )
    assert patched["metadata"]["labels"] == {"a": "b"}
    custom.patch_namespaced_custom_object_status(
        *KUEUE, "default", "localqueues", "lq", {"status": {"pendingWorkloads": 2}}
    )
    got = custom.get_namespaced_custom_object(*KUEUE, "default", "localqueues", "lq")
    assert got["status"]["pendingWorkloads"] == 2 and got["spec"]["clusterQueue"] == "cq"
    flavors = custom.list_cluster_custom_object(*KUEUE, "resourceflavors")
    assert [f["metadata"]["name"] for f in flavors["items"]] == ["gpu-a100"]
    custom.delete_cluster_custom_object(*KUEUE, "resourceflavors", "gpu-a100")
    assert custom.list_cluster_custom_object(*KUEUE, "resourceflavors")["items"] == []


def test_sync_watch_from_resource_version(k8s):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod("default", _pod("before", {"app": "w"}))
    rv = core.list_namespaced_pod("default").metadata.resource_version

    def later() -> None:
        time.sleep(0.3)
        core.create_namespaced_pod("default", _pod("after", {"app": "w"}))
        core.create_namespaced_pod("default", _pod("other", {"app": "z"}))
        core.patch_namespaced_pod("after", "default", {"metadata": {"labels": {"step": "2"}}})
        core.delete_namespaced_pod("after", "default")

    threading.Thread(target=later).start()
    seen = []
    started = time.monotonic()
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_pod, "default", label_selector="app=w", resource_version=rv, timeout_seconds=2
    ):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]
    assert time.monotonic() - started < 10  # timeoutSeconds ended the stream


def test_watch_too_old_is_410(k8s, server):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod("default", _pod("old"))
    old_rv = core.read_namespaced_pod("old", "default").metadata.resource_version
    core.delete_namespaced_pod("old", "default")
    # A restart drops the in-memory history: watching from before it must say 410 Gone, as Kubernetes does.
    server.stop()
    server.start()
    core = client.CoreV1Api(_client_for(server))
    with pytest.raises(ApiException) as gone:
        for _ in watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=2):
            pass
    assert gone.value.status == 410


def _client_for(server):
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def test_state_survives_restart(k8s, server):
    core = client.CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": "physics"}})
    core.create_namespaced_config_map("physics", {"metadata": {"name": "cfg"}, "data": {"k": "v"}})
    rv = core.read_namespaced_config_map("cfg", "physics").metadata.resource_version
    server.stop()
    server.start()
    core = client.CoreV1Api(_client_for(server))
    cm = core.read_namespaced_config_map("cfg", "physics")
    assert cm.data == {"k": "v"} and cm.metadata.resource_version == rv
    created = core.create_namespaced_config_map("physics", {"metadata": {"name": "cfg2"}})
    assert int(created.metadata.resource_version) > int(rv)


def test_bookmarks(k8s, server):
    import urllib.request

    rv = client.CoreV1Api(k8s).list_namespaced_pod("default").metadata.resource_version
    url = (
        f"{server.url}/api/v1/namespaces/default/pods?watch=1&allowWatchBookmarks=true"
        f"&resourceVersion={rv}&timeoutSeconds=2"
    )
    with urllib.request.urlopen(url) as resp:
        events = [json.loads(line) for line in resp.read().splitlines()]
    assert events and all(e["type"] == "BOOKMARK" for e in events)
    assert events[0]["object"]["metadata"]["resourceVersion"] == rv


def test_events_in_both_api_shapes(k8s):
    core = client.CoreV1Api(k8s)
    events_v1 = client.EventsV1Api(k8s)
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "nb.1"},
            "involvedObject": {"kind": "Pod", "name": "nb", "namespace": "default"},
            "reason": "Scheduled",
            "message": "assigned to node-1",
            "type": "Normal",
            "count": 1,
            "source": {"component": "default-scheduler"},
        },
    )
    seen = events_v1.read_namespaced_event("nb.1", "default")
    assert seen.regarding.name == "nb" and seen.note == "assigned to node-1" and seen.deprecated_count == 1
    events_v1.create_namespaced_event(
        "default",
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "nb.2"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "aifacility/kueue",
            "reportingInstance": "kueue-1",
            "action": "Admit",
            "reason": "Admitted",
            "type": "Normal",
            "regarding": {"kind": "Pod", "name": "nb", "namespace": "default"},
            "note": "admitted by cq",
        },
    )
    legacy = core.read_namespaced_event("nb.2", "default")
    assert legacy.message == "admitted by cq" and legacy.involved_object.name == "nb"
    assert legacy.reporting_component == "aifacility/kueue"
    by_regarding = events_v1.list_namespaced_event("default", field_selector="regarding.name=nb,reason=Admitted")
    assert [e.metadata.name for e in by_regarding.items] == ["nb.2"]
    events_v1.patch_namespaced_event("nb.2", "default", {"note": "admitted again"})
    assert core.read_namespaced_event("nb.2", "default").message == "admitted again"
    events_v1.delete_namespaced_event("nb.2", "default")
    assert [e.metadata.name for e in core.list_namespaced_event("default").items] == ["nb.1"]


def test_bookmarks_through_the_client(k8s):
    core = client.CoreV1Api(k8s)
    rv = core.list_namespaced_pod("default").metadata.resource_version
    events = list(
        watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=2
        )
    )
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
