"""Malformed or wrong requests get a 4xx with a message a person can act on, and nothing is submitted.

These run the real server; the SLURM configuration points nowhere, which is fine: every request here must be
refused before the batch system is asked anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE

import aiohttp
import pytest
from interlink_helpers import container, pod, retrieved

from aifacility_interlink.client import PluginClient


@pytest.fixture
def plugin(plugin_factory):
    return plugin_factory(None, runtime="bwrap")


async def call(url: str, method: str, path: str, body: str | bytes, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s, s.request(method, url + path, data=body, headers=headers) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text.startswith("{") else {"raw": text})


async def test_malformed_json_is_400(plugin) -> None:
    for path, method in [("/create", "POST"), ("/delete", "POST"), ("/status", "GET"), ("/getLogs", "GET")]:
        status, body = await call(plugin.url, method, path, b"{not json")
        assert status == 400, path
        assert "not valid JSON" in body["error"]
    status, body = await call(plugin.url, "POST", "/create", b"")
    assert status == 400 and "empty" in body["error"]


async def test_wrong_shapes_name_the_field(plugin) -> None:
    status, body = await call(plugin.url, "POST", "/create", json.dumps([{"pod": {}}]))
    assert status == 400 and "RetrievedPodData" in body["error"]
    status, body = await call(plugin.url, "POST", "/create", json.dumps({"pod": {"spec": {"containers": []}}}))
    assert status == 400 and "pod.metadata" in body["error"]
    no_containers = pod("x", [])
    status, body = await call(plugin.url, "POST", "/create", json.dumps({"pod": no_containers}))
    assert status == 400 and "pod.spec.containers" in body["error"]
    status, body = await call(plugin.url, "GET", "/status", json.dumps({"metadata": {}}))
    assert status == 400 and "list" in body["error"]
    bad_opts = {"PodUID": "u", "ContainerName": "c", "Opts": {"Tail": -1}}
    status, body = await call(plugin.url, "GET", "/getLogs", json.dumps(bad_opts))
    assert status == 400 and "Opts.Tail" in body["error"]


async def test_pods_that_cannot_run_are_refused_with_the_reason(plugin) -> None:
    pvc = pod("pvc", [container("c", "true", [("data", "/data")])],
              volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}])
    status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(pvc)))
    assert status == 400 and "persistentVolumeClaim" in body["error"] and "not supported" in body["error"]

    missing_cm = pod("cm", [container("c", "true", [("cfg", "/cfg")])],
                     volumes=[{"name": "cfg", "configMap": {"name": "absent"}}])
    status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(missing_cm)))
    assert status == 400 and "'absent' was not sent" in body["error"]

    no_cmd = pod("nocmd", [{"name": "c", "image": "busybox"}])
    status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(no_cmd)))
    assert status == 400 and "has no command" in body["error"]

    bad_flavor = pod("flv", [container("c", "true")], annotations={"slurm-job.vk.io/flavor": "huge"})
    status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(bad_flavor)))
    assert status == 400 and "names no flavor" in body["error"]

    managed = pod("out", [container("c", "true")], annotations={"slurm-job.vk.io/flags": "--output=/etc/x"})
    status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(managed)))
    assert status == 400 and "--output is set by the plugin" in body["error"]

    bad_qty = pod("qty", [container("c", "true", limits={"memory": "lots"})])
    status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(bad_qty)))
    assert status == 400 and "not a Kubernetes quantity" in body["error"]

    escape = pod("esc", [container("c", "true", [("cfg", "/cfg")])],
                 volumes=[{"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "k", "path": "../../x"}]}}])
    status, body = await call(plugin.url, "POST", "/create",
                              json.dumps(retrieved(escape, config_maps={"cm": {"k": "v"}})))
    assert status == 400 and "must not contain '..'" in body["error"]
    host = pod("host", [container("c", "true", [("root", "/host")])],
               volumes=[{"name": "root", "hostPath": {"path": "/etc"}}])
    status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(host)))
    assert status == 400 and "hostPath '/etc' is not allowed" in body["error"]
    for field, value in [("namespace", "../../etc"), ("uid", "../x"), ("uid", ""), ("name", "a/b")]:
        traversal = pod("t", [container("c", "true")])
        traversal["metadata"][field] = value
        status, body = await call(plugin.url, "POST", "/create", json.dumps(retrieved(traversal)))
        assert status == 400 and f"pod.metadata.{field}" in body["error"], (field, body)
    # nothing of these was kept
    assert not [p for p in plugin.data_root.iterdir() if p.is_dir()]


async def test_unknown_pods_are_404(plugin) -> None:
    ghost = pod("ghost", [container("c", "true")])
    status, body = await call(plugin.url, "POST", "/delete", json.dumps(ghost))
    assert status == 404 and "ghost" in body["error"] and "not known" in body["error"]
    logs = {"Namespace": "physics", "PodUID": ghost["metadata"]["uid"], "PodName": "ghost", "ContainerName": "c"}
    status, body = await call(plugin.url, "GET", "/getLogs", json.dumps(logs))
    assert status == 404 and "not known" in body["error"]
    # an unknown pod in /status is reported as waiting, so the virtual node keeps it pending
    status, body = await call(plugin.url, "GET", "/status", json.dumps([ghost]))
    assert status == 200
    [st] = json.loads(body["raw"])
    assert st["containers"][0]["state"]["waiting"]["reason"] == "NotKnownToPlugin"


async def test_exclusive_log_options_are_400(plugin) -> None:
    both = {"PodUID": "u", "ContainerName": "c", "Opts": {"Tail": 1, "Bytes": 5}}
    status, body = await call(plugin.url, "GET", "/getLogs", json.dumps(both))
    assert status == 400 and "Tail and Opts.Bytes" in body["error"]


async def test_ping_is_answered_even_without_slurm(plugin) -> None:
    status, body = await call(plugin.url, "GET", "/status", b"[]")
    assert status == 200 and body["status"] == "ok"


async def test_bearer_token(plugin_factory) -> None:
    plugin = plugin_factory(None, runtime="none", token="letmein")
    status, body = await call(plugin.url, "GET", "/status", b"[]")
    assert status == 401 and "bearer token" in body["error"]
    status, body = await call(plugin.url, "GET", "/status", b"[]", token="wrong")
    assert status == 401
    status, body = await call(plugin.url, "GET", "/status", b"[]", token="letmein")
    assert status == 200 and body["status"] == "ok"


async def test_unix_socket_listener(tmp_path) -> None:
    """interLink can reach its plugin over a unix socket; bad listen values are refused with a message."""
    sock = tmp_path / "plugin.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aifacility_interlink", "serve", "--backend", "slurm", "--listen", f"unix://{sock}",
        "--data-root", str(tmp_path / "data"), "--runtime", "none",
        env={**os.environ, "SLURM_CONF": str(tmp_path / "none.conf")})
    try:
        async with PluginClient(f"unix://{sock}") as c:
            for _ in range(100):
                try:
                    ping = await c.ping()
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.1)
            assert ping.status == "ok"
    finally:
        proc.terminate()
        await proc.wait()
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aifacility_interlink", "serve", "--listen", "localhost", stderr=PIPE)
    _, err = await bad.communicate()
    assert bad.returncode == 2 and b"is not HOST:PORT" in err
