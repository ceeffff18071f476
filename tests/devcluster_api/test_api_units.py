"""Unit tests of the pure parts: strategic merge patch, selectors, and store semantics without HTTP."""

from __future__ import annotations

import asyncio

import pytest

from aifacility.devcluster import kinds
from aifacility.devcluster.patch import PatchError, apply_patch, merge_patch, strategic_merge_patch
from aifacility.devcluster.selectors import (
    SelectorError,
    matches_label_selector_dict,
    object_matcher,
    parse_label_selector,
)
from aifacility.devcluster.store import (
    AlreadyExists,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    Store,
    TooLargeResourceVersion,
)

POD_SPEC = {
    "containers": [
        {
            "name": "a",
            "image": "i:1",
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
            "ports": [{"containerPort": 80}],
            "volumeMounts": [{"name": "v", "mountPath": "/data"}],
        },
        {"name": "b", "image": "j:1"},
    ],
    "volumes": [{"name": "v", "emptyDir": {}}],
    "tolerations": [{"key": "k", "operator": "Exists"}],
}


def test_strategic_merge_by_keys():
    patched = strategic_merge_patch(
        {"spec": POD_SPEC},
        {
            "spec": {
                "containers": [
                    {"name": "a", "image": "i:2", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]},
                    {"name": "c", "image": "k:1"},
                ],
                "tolerations": [{"key": "other", "operator": "Exists"}],
            }
        },
    )
    containers = patched["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a", "b", "c"]
    assert containers[0]["image"] == "i:2"
    assert containers[0]["env"] == [
        {"name": "X", "value": "1"},
        {"name": "Y", "value": "3"},
        {"name": "Z", "value": "4"},
    ]
    assert containers[0]["ports"] == [{"containerPort": 80}]  # untouched fields stay
    assert patched["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]  # atomic list: replaced


def test_strategic_directives():
    spec = {"spec": POD_SPEC, "metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}}}
    patched = strategic_merge_patch(
        spec,
        {
            "metadata": {"finalizers": ["b"], "labels": {"x": None}},
            "spec": {
                "containers": [{"name": "b", "$patch": "delete"}],
                "volumes": [{"$patch": "replace"}, {"name": "w", "emptyDir": {}}],
                "$setElementOrder/containers": [{"name": "a"}],
            },
        },
    )
    assert patched["metadata"] == {"finalizers": ["a", "b"], "labels": {"y": "2"}}
    assert [c["name"] for c in patched["spec"]["containers"]] == ["a"]
    assert patched["spec"]["volumes"] == [{"name": "w", "emptyDir": {}}]
    replaced = strategic_merge_patch(spec, {"spec": {"$patch": "replace", "containers": []}})
    assert replaced["spec"] == {"containers": []}
    deleted = strategic_merge_patch(spec, {"spec": {"$patch": "delete"}})
    assert "spec" not in deleted
    pruned = strategic_merge_patch(spec, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert pruned["metadata"]["finalizers"] == []
    status = strategic_merge_patch(
        {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
    )
    assert status["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "Scheduled", "status": "True"},
    ]
    service = strategic_merge_patch(
        {"spec": {"ports": [{"port": 80, "name": "http"}]}}, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    )
    assert service["spec"]["ports"] == [{"port": 80, "name": "http", "targetPort": 8080}]


def test_patch_errors_and_merge_patch():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": [1]}}) == {"a": {"c": 2, "d": [1]}}
    with pytest.raises(PatchError) as e:
        apply_patch({}, {"op": "add"}, "json")
    assert e.value.code == 400
    with pytest.raises(PatchError) as e:
        apply_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}], "json")
    assert e.value.code == 422
    with pytest.raises(PatchError) as e:
        apply_patch({}, {"spec": {"containers": [{"image": "x"}]}}, "strategic")
    assert e.value.code == 400 and "merge key 'name'" in str(e.value)
    with pytest.raises(PatchError) as e:
        apply_patch({}, {}, "strategic", strategic_allowed=False)
    assert e.value.code == 415


def test_label_selectors():
    obj = {"metadata": {"labels": {"a": "b", "e": "x", "g": ""}}}
    assert object_matcher("a=b,c!=d,e in (x,y),f notin (z),g,!h", None)(obj)
    assert not object_matcher("a==c", None)(obj)
    assert not object_matcher("h", None)(obj)
    assert object_matcher("", "metadata.labels.a=b")(obj)
    for bad in ("a in (x", "=b", "a in (x),", "!a in (b)"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)
    sel = {
        "matchLabels": {"a": "b"},
        "matchExpressions": [{"key": "e", "operator": "In", "values": ["x"]}, {"key": "h", "operator": "DoesNotExist"}],
    }
    assert matches_label_selector_dict({"a": "b", "e": "x"}, sel)
    assert not matches_label_selector_dict({"a": "b", "e": "y"}, sel)
    assert matches_label_selector_dict({}, {})


def test_field_selectors():
    pod = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": ""},
        "status": {"phase": "Running"},
        "involvedObject": {"kind": "Pod"},
    }
    assert object_matcher(None, "spec.nodeName=,status.phase!=Pending,metadata.name==p")(pod)
    assert object_matcher(None, "involvedObject.kind=Pod")(pod)
    assert not object_matcher(None, "status.phase=Pending")(pod)
    with pytest.raises(SelectorError):
        object_matcher(None, "status.phase")


def _pod(name: str, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}], **spec}}


async def test_store_lifecycle_finalizers_and_watch_transitions(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    watcher = store.watch(kinds.POD, "default", label_selector="team=a")
    store.create(kinds.POD, {**_pod("p"), "metadata": {"name": "p", "labels": {"team": "b"}}})
    store.modify(kinds.POD, "default", "p", lambda o: o["metadata"]["labels"].update(team="a"))
    before = store.get(kinds.POD, "default", "p")["metadata"]["resourceVersion"]
    same = store.modify(kinds.POD, "default", "p", lambda o: None)  # no-op: no event, same resourceVersion
    assert same["metadata"]["resourceVersion"] == before
    store.modify(kinds.POD, "default", "p", lambda o: o["metadata"].update(finalizers=["x/y"]))
    marked = store.delete(kinds.POD, "default", "p")
    assert marked["metadata"]["deletionTimestamp"] and store.get(kinds.POD, "default", "p")
    store.modify(kinds.POD, "default", "p", lambda o: o["metadata"]["labels"].update(team="c"))
    with pytest.raises(AlreadyExists):
        store.create(kinds.POD, _pod("p"))
    store.modify(kinds.POD, "default", "p", lambda o: o["metadata"]["labels"].update(team="a"))
    store.modify(kinds.POD, "default", "p", lambda o: o["metadata"].update(finalizers=[]))
    with pytest.raises(NotFound):
        store.get(kinds.POD, "default", "p")
    watcher.close()
    events = [(e.type, e.object["metadata"]["labels"]["team"]) async for e in watcher]
    # moving into the selector is ADDED, out of it DELETED, as the real watch cache reports
    assert events == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "c"),
        ("ADDED", "a"),
        ("DELETED", "a"),
    ]
    store.close()


async def test_bound_pods_wait_for_their_node_and_namespaces_empty_first(tmp_path):
    store = Store(None)
    store.create(kinds.NAMESPACE, {"metadata": {"name": "team"}})
    store.create(kinds.POD, {**_pod("bound", nodeName="n1"), "metadata": {"name": "bound", "namespace": "team"}})
    store.create(kinds.CONFIGMAP, {"metadata": {"name": "cm", "namespace": "team"}})
    ns = store.delete(kinds.NAMESPACE, None, "team")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(Forbidden):
        store.create(kinds.CONFIGMAP, {"metadata": {"name": "late", "namespace": "team"}})
    assert store.get(kinds.POD, "team", "bound")["metadata"]["deletionGracePeriodSeconds"] == 30
    with pytest.raises(NotFound):
        store.get(kinds.CONFIGMAP, "team", "cm")
    store.remove(kinds.POD, "team", "bound")  # the node agent has stopped the containers
    with pytest.raises(NotFound):
        store.get(kinds.NAMESPACE, None, "team")
    with pytest.raises(Forbidden):
        store.delete(kinds.NAMESPACE, None, "default")


async def test_hooks_mutate_and_reject(tmp_path):
    store = Store(None)

    def hook(kind, operation, new, old):
        if kind is kinds.CONFIGMAP and operation == "CREATE":
            new.setdefault("data", {})["injected"] = "yes"
        if kind is kinds.CONFIGMAP and new and new.get("data", {}).get("forbidden"):
            raise Invalid('ConfigMap "x" is invalid: data.forbidden: Forbidden: not here')

    store.add_hook(hook)
    cm = store.create(kinds.CONFIGMAP, {"metadata": {"name": "c"}})
    assert cm["data"] == {"injected": "yes"}
    with pytest.raises(Invalid):
        store.modify(kinds.CONFIGMAP, "default", "c", lambda o: o["data"].update(forbidden="1"))
    assert store.get(kinds.CONFIGMAP, "default", "c")["data"] == {"injected": "yes"}


async def test_watch_bookmarks_and_history(tmp_path):
    store = Store(None, history_size=3)
    rv = store.resource_version
    for i in range(5):
        store.create(kinds.CONFIGMAP, {"metadata": {"name": f"c{i}"}})
    with pytest.raises(Gone):
        store.watch(kinds.CONFIGMAP, resource_version=rv)
    with pytest.raises(TooLargeResourceVersion):
        store.watch(kinds.CONFIGMAP, resource_version=str(int(store.resource_version) + 10))
    watcher = store.watch(kinds.CONFIGMAP, resource_version=store.resource_version, bookmark_interval=0.05)
    event = await asyncio.wait_for(watcher.__anext__(), 2)
    assert event.type == "BOOKMARK" and event.object["metadata"]["resourceVersion"] == store.resource_version
    watcher.close()


def test_propagation_policies_become_finalizers():
    store = Store(None)
    store.create(
        kinds.JOB,
        {
            "metadata": {"name": "fg"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
        },
    )
    marked = store.delete(kinds.JOB, "default", "fg", propagation_policy="Foreground")
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"] and marked["metadata"]["deletionTimestamp"]
    store.create(kinds.CONFIGMAP, {"metadata": {"name": "o"}})
    assert store.delete(kinds.CONFIGMAP, "default", "o", propagation_policy="Orphan")["metadata"]["finalizers"] == [
        "orphan"
    ]
    # what the garbage collector does once dependents are handled: drop the finalizer, and the object goes
    store.modify(kinds.CONFIGMAP, "default", "o", lambda o: o["metadata"].update(finalizers=[]))
    with pytest.raises(NotFound):
        store.get(kinds.CONFIGMAP, "default", "o")
    store.create(kinds.CONFIGMAP, {"metadata": {"name": "bg"}})
    store.delete(kinds.CONFIGMAP, "default", "bg", propagation_policy="Background")
    with pytest.raises(NotFound):
        store.get(kinds.CONFIGMAP, "default", "bg")
