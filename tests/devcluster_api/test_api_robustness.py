"""Whatever a client sends, the answer is a Kubernetes Status with a 4xx code, never a 500 or a traceback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from aifacility.devcluster import kinds

WEIRD_BODIES = [
    b"",
    b"null",
    b"42",
    b'"text"',
    b"{",
    b'{"metadata": "x"}',
    b'{"metadata": {"name": 5}}',
    b'{"metadata": {"name": "ok", "labels": ["a"]}}',
    b'{"metadata": {"name": "ok", "labels": {"a": 1}}}',
    b'{"metadata": {"name": "ok", "annotations": {"a": {"b": 1}}}}',
    b'{"metadata": {"name": "ok", "finalizers": "x"}, "spec": "x"}',
    b'{"metadata": {"name": "ok"}, "spec": {"containers": "x", "template": 3, "ports": 7}}',
    b'{"metadata": {"name": "ok"}, "spec": {"containers": [1, null], "template": {"spec": []}}}',
    b'{"metadata": {"name": "ok"}, "spec": {"template": {"spec": {"containers": [{"name": 3}]}}}}',
    b'{"metadata": {"name": "ok"}, "data": [1], "stringData": "x", "status": 5}',
    b'{"apiVersion": "v2", "kind": "Nope", "metadata": {"name": "ok"}}',
    b'{"metadata": {"generateName": 7}}',
]


def _send(url: str, method: str, body: bytes | None, ctype: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _collection(server, kind: kinds.Kind) -> str:
    base = f"{server.url}/api/v1" if not kind.group else f"{server.url}/apis/{kind.group}/{kind.version}"
    return f"{base}/namespaces/default/{kind.plural}" if kind.namespaced else f"{base}/{kind.plural}"


def test_weird_bodies_never_500(server):
    for kind in kinds.ALL_KINDS:
        url = _collection(server, kind)
        for body in WEIRD_BODIES:
            code, answer = _send(url, "POST", body)
            assert code < 500, (kind.plural, body, answer)
            if code >= 400:
                assert answer["kind"] == "Status" and answer["message"], (kind.plural, body, answer)
            else:  # accepted: it must be readable, replaceable and patchable with weird input too
                name = answer["metadata"]["name"]
                for method, ctype in (
                    ("PUT", "application/json"),
                    ("PATCH", "application/merge-patch+json"),
                    ("PATCH", "application/json-patch+json"),
                    ("PATCH", "application/strategic-merge-patch+json"),
                ):
                    for weird in WEIRD_BODIES:
                        code, answer = _send(f"{url}/{name}", method, weird, ctype)
                        assert code < 500, (kind.plural, method, ctype, weird, answer)
                code, _ = _send(f"{url}/{name}", "DELETE", b"{not json")
                assert code == 400


def test_weird_queries_never_500(server):
    url = _collection(server, kinds.POD)
    for query in (
        "watch=maybe",
        "limit=x",
        "limit=-1",
        "continue=%%%",
        "labelSelector=a%20in%20(",
        "timeoutSeconds=x",
        "fieldSelector=nodots",
        "resourceVersion=abc&watch=1",
        "resourceVersionMatch=Odd",
        "watch=1&timeoutSeconds=-5",
    ):
        code, answer = _send(f"{url}?{query}", "GET", None)
        assert 400 <= code < 500, (query, answer)
        assert answer["kind"] == "Status"
    for path in (
        "/api/v1/nothings",
        "/apis/batch/v9/jobs",
        "/api/v1/namespaces/default/pods/x/exec",
        "/apis/nogroup",
        "/api/v1/nodes/x/y/z/w",
    ):
        code, answer = _send(server.url + path, "GET", None)
        assert code == 404 and answer["kind"] == "Status", path


def test_stopping_ends_open_watches(server):
    import threading
    import time

    finished = threading.Event()

    def watch() -> None:
        with urllib.request.urlopen(f"{server.url}/api/v1/namespaces?watch=1&timeoutSeconds=60", timeout=30) as r:
            r.read()
        finished.set()

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    assert finished.wait(10)
    assert time.monotonic() - started < 5  # not the 60 s the watch asked for
    server.start()


def test_metadata_only_answers(server):
    accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
    req = urllib.request.Request(f"{server.url}/api/v1/namespaces", headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as resp:
        listed = json.loads(resp.read())
    assert listed["kind"] == "PartialObjectMetadataList"
    assert {i["kind"] for i in listed["items"]} == {"PartialObjectMetadata"}
    assert "spec" not in listed["items"][0] and listed["items"][0]["metadata"]["name"]


def test_unindexed_field_selectors_are_refused_like_kubernetes(server):
    code, answer = _send(f"{_collection(server, kinds.POD)}?fieldSelector=spec.containers=x", "GET", None)
    assert code == 400 and answer["message"] == "field label not supported: spec.containers"
    code, answer = _send(f"{_collection(server, kinds.POD)}?fieldSelector=spec.nodeName%3Dn1", "GET", None)
    assert code == 200 and answer["items"] == []
    code, answer = _send(
        f"{_collection(server, kinds.WORKLOAD)}?fieldSelector=status.admission.clusterQueue%3Dcq", "GET", None
    )
    assert code == 200


async def test_idle_watch_of_a_vanished_client_is_released(monkeypatch):
    import asyncio
    import socket

    from aiohttp import web

    from aifacility.devcluster.api import make_app
    from aifacility.devcluster.api import watch as watch_module
    from aifacility.devcluster.store import Store

    monkeypatch.setattr(watch_module, "CLIENT_CHECK_SECONDS", 0.1)
    store = Store(None)
    runner = web.AppRunner(make_app(store))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(b"GET /api/v1/pods?watch=1&timeoutSeconds=60 HTTP/1.1\r\nHost: test\r\n\r\n")
        async with asyncio.timeout(5):
            while not store.open_watchers:  # noqa: ASYNC110 - the server offers no signal
                await asyncio.sleep(0.02)
    finally:
        sock.close()
    async with asyncio.timeout(5):
        while store.open_watchers:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await runner.cleanup()
