"""Malformed or wrong requests get a 4xx with a message a person can act on, and nothing is submitted.

These run the real server; the SLURM configuration points nowhere, which is fine: every request here must be
refused before the batch system is asked anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from asyncio.subprocess import PIPE

import aiohttp
import pytest
from interlink_helpers import PluginProcess, container, pod, retrieved

from aifacility_interlink.client import PluginClient


@pytest.fixture
def plugin(plugin_factory):
    return plugin_factory(None, runtime="bwrap")


async def call(url: str, method: str, path: str, body: str | bytes, token: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s, s.request(method, url + path, data=body, headers=headers) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text.startswith("{") else {"raw": text})


async def send(plugin: PluginProcess, method: str, path: str, body: str | bytes) -> tuple[int, dict]:
    """A request as the virtual kubelet sends it: with the plugin's token."""
    return await call(plugin.url, method, path, body, token=plugin.token)


async def test_malformed_json_is_400(plugin) -> None:
    for path, method in [("/create", "POST"), ("/delete", "POST"), ("/status", "GET"), ("/getLogs", "GET")]:
        status, body = await send(plugin, method, path, b"{not json")
        assert status == 400, path
        assert "not valid JSON" in body["error"]
    status, body = await send(plugin, "POST", "/create", b"")
    assert status == 400 and "empty" in body["error"]


async def test_wrong_shapes_name_the_field(plugin) -> None:
    status, body = await send(plugin, "POST", "/create", json.dumps([{"pod": {}}]))
    assert status == 400 and "RetrievedPodData" in body["error"]
    status, body = await send(plugin, "POST", "/create", json.dumps({"pod": {"spec": {"containers": []}}}))
    assert status == 400 and "pod.metadata" in body["error"]
    no_containers = pod("x", [])
    status, body = await send(plugin, "POST", "/create", json.dumps({"pod": no_containers}))
    assert status == 400 and "pod.spec.containers" in body["error"]
    status, body = await send(plugin, "GET", "/status", json.dumps({"metadata": {}}))
    assert status == 400 and "list" in body["error"]
    bad_opts = {"PodUID": "u", "ContainerName": "c", "Opts": {"Tail": -1}}
    status, body = await send(plugin, "GET", "/getLogs", json.dumps(bad_opts))
    assert status == 400 and "Opts.Tail" in body["error"]


async def test_pods_that_cannot_run_are_refused_with_the_reason(plugin) -> None:
    pvc = pod("pvc", [container("c", "true", [("data", "/data")])],
              volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}])
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(pvc)))
    assert status == 400 and "persistentVolumeClaim" in body["error"] and "not supported" in body["error"]

    missing_cm = pod("cm", [container("c", "true", [("cfg", "/cfg")])],
                     volumes=[{"name": "cfg", "configMap": {"name": "absent"}}])
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(missing_cm)))
    assert status == 400 and "'absent' was not sent" in body["error"]

    no_cmd = pod("nocmd", [{"name": "c", "image": "busybox"}])
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(no_cmd)))
    assert status == 400 and "has no command" in body["error"]

    bad_flavor = pod("flv", [container("c", "true")], annotations={"slurm-job.vk.io/flavor": "huge"})
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(bad_flavor)))
    assert status == 400 and "names no flavor" in body["error"]

    managed = pod("out", [container("c", "true")], annotations={"slurm-job.vk.io/flags": "--output=/etc/x"})
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(managed)))
    assert status == 400 and "--output is locked by this site" in body["error"]

    bad_qty = pod("qty", [container("c", "true", limits={"memory": "lots"})])
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(bad_qty)))
    assert status == 400 and "not a Kubernetes quantity" in body["error"]

    escape = pod("esc", [container("c", "true", [("cfg", "/cfg")])],
                 volumes=[{"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "k", "path": "../../x"}]}}])
    status, body = await send(plugin, "POST", "/create",
                              json.dumps(retrieved(escape, config_maps={"cm": {"k": "v"}})))
    assert status == 400 and "must not contain '..'" in body["error"]
    host = pod("host", [container("c", "true", [("root", "/host")])],
               volumes=[{"name": "root", "hostPath": {"path": "/etc"}}])
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(host)))
    assert status == 400 and "hostPath '/etc' is not allowed" in body["error"]
    for field, value in [("namespace", "../../etc"), ("uid", "../x"), ("uid", ""), ("name", "a/b")]:
        traversal = pod("t", [container("c", "true")])
        traversal["metadata"][field] = value
        status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(traversal)))
        assert status == 400 and f"pod.metadata.{field}" in body["error"], (field, body)
    # nothing of these was kept
    assert not list((plugin.data_root / "jobs").iterdir())


async def test_unknown_pods_are_404(plugin) -> None:
    ghost = pod("ghost", [container("c", "true")])
    status, body = await send(plugin, "POST", "/delete", json.dumps(ghost))
    assert status == 404 and "ghost" in body["error"] and "not known" in body["error"]
    logs = {"Namespace": "physics", "PodUID": ghost["metadata"]["uid"], "PodName": "ghost", "ContainerName": "c"}
    status, body = await send(plugin, "GET", "/getLogs", json.dumps(logs))
    assert status == 404 and "not known" in body["error"]
    # an unknown pod in /status is reported as waiting, so the virtual node keeps it pending
    status, body = await send(plugin, "GET", "/status", json.dumps([ghost]))
    assert status == 200
    [st] = json.loads(body["raw"])
    assert st["containers"][0]["state"]["waiting"]["reason"] == "NotKnownToPlugin"


async def test_exclusive_log_options_are_400(plugin) -> None:
    both = {"PodUID": "u", "ContainerName": "c", "Opts": {"Tail": 1, "Bytes": 5}}
    status, body = await send(plugin, "GET", "/getLogs", json.dumps(both))
    assert status == 400 and "Tail and Opts.Bytes" in body["error"]


async def test_ping_is_answered_even_without_slurm(plugin) -> None:
    status, body = await send(plugin, "GET", "/status", b"[]")
    assert status == 200 and body["status"] == "ok"


async def test_unix_socket_listener(tmp_path) -> None:
    """interLink can reach its plugin over a unix socket (mode 0600: only the plugin's own user connects); a
    socket left by a killed plugin is replaced; bad listen values are refused with a message."""
    sock = tmp_path / "plugin.sock"
    for _ in range(2):  # the second start finds the first one's socket file
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aifacility_interlink", "serve", "--backend", "slurm", "--listen",
            f"unix://{sock}", "--data-root", str(tmp_path / "data"), "--runtime", "none",
            env={**os.environ, "SLURM_CONF": str(tmp_path / "none.conf")})
        try:
            async with PluginClient(f"unix://{sock}") as c:
                ping = None
                for _ in range(100):
                    try:
                        ping = await c.ping()
                        break
                    except (aiohttp.ClientError, OSError):
                        await asyncio.sleep(0.1)
                assert ping is not None and ping.status == "ok"
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        finally:
            proc.kill()
            await proc.wait()
    not_a_socket = tmp_path / "file.sock"
    not_a_socket.write_text("precious")
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aifacility_interlink", "serve", "--backend", "slurm", "--listen",
        f"unix://{not_a_socket}", "--data-root", str(tmp_path / "data"), "--runtime", "none", stderr=PIPE,
        env={**os.environ, "SLURM_CONF": str(tmp_path / "none.conf")})
    _, err = await refused.communicate()
    assert refused.returncode == 2 and b"exists and is not a socket" in err
    assert not_a_socket.read_text() == "precious"
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aifacility_interlink", "serve", "--listen", "localhost", stderr=PIPE)
    _, err = await bad.communicate()
    assert bad.returncode == 2 and b"is not HOST:PORT" in err


async def test_bodies_over_the_size_limit_are_413(plugin_factory) -> None:
    plugin = plugin_factory(None, runtime="none", max_body_bytes=65536)
    big = pod("big", [container("c", "true")], annotations={"blob": "x" * 200_000})
    for path, method, body in [("/create", "POST", json.dumps(retrieved(big))), ("/status", "GET", json.dumps([big])),
                               ("/delete", "POST", json.dumps(big))]:
        status, reply = await send(plugin, method, path, body)
        assert status == 413, path
        assert reply["error"].startswith("the request body is too large") and "the limit is 65536 bytes" in reply[
            "error"], reply

    async def chunks():  # no Content-Length: the limit holds for a streamed body too
        for _ in range(20):
            yield b" " * 10_000
        yield b"[]"

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {plugin.token}"}
    async with aiohttp.ClientSession() as s, s.get(plugin.url + "/status", data=chunks(), headers=headers) as r:
        assert r.status == 413 and "too large" in (await r.json())["error"]
    # just under the limit is fine
    status, _ = await send(plugin, "GET", "/status", b" " * 60_000 + b"[]")
    assert status == 200
    assert not list((plugin.data_root / "jobs").iterdir())


async def test_deep_nesting_is_400_not_a_recursion_error(plugin) -> None:
    for depth in (150, 5_000, 200_000):
        for path, method in [("/create", "POST"), ("/status", "GET"), ("/getLogs", "GET")]:
            status, body = await send(plugin, method, path, "[" * depth + "]" * depth)
            assert status == 400, (depth, path, body)
            assert "deeper than 100 levels" in body["error"]
    # nesting inside an otherwise good pod, in a field the plugin passes through
    nested: dict = {}
    cur = nested
    for _ in range(120):
        cur["x"] = {}
        cur = cur["x"]
    deep_pod = pod("deep", [container("c", "true")])
    deep_pod["spec"]["affinity"] = nested
    status, body = await send(plugin, "POST", "/create", json.dumps(retrieved(deep_pod)))
    assert status == 400 and "deeper than 100 levels" in body["error"]
    # Kubernetes objects nest far less: a pod with 60 levels of pass-through data is accepted
    shallow: dict = {}
    cur = shallow
    for _ in range(60):
        cur["x"] = {}
        cur = cur["x"]
    ok_pod = pod("fine", [container("c", "true")])
    ok_pod["spec"]["affinity"] = shallow
    status, _ = await send(plugin, "GET", "/status", json.dumps([ok_pod]))
    assert status == 200
    assert "RecursionError" not in plugin.log.read_text() and "Traceback" not in plugin.log.read_text()


async def test_bodies_that_are_not_utf8_json_are_explained(plugin) -> None:
    p = pod("enc", [container("c", "true")])
    text = json.dumps(retrieved(p))
    for body in [text.encode("utf-16"), text.encode("utf-16-be"), text.encode("utf-32"),
                 text.replace("enc", "é").encode("latin-1")]:
        status, reply = await send(plugin, "POST", "/create", body)
        assert status == 400
        assert reply["error"].startswith("the request body is not UTF-8 text"), reply
        assert "codec" not in reply["error"] and "utf-16-be" not in reply["error"]
    # a UTF-8 byte-order mark is fine (and then the pod is refused for what it is: no SLURM here)
    status, reply = await send(plugin, "GET", "/status", "\ufeff[]".encode())
    assert status == 200
    cases = [
        ('{"pod": NaN}', "NaN, which is not JSON"),
        ('[Infinity]', "Infinity, which is not JSON"),
        ('[' + "9" * 5000 + ']', "a number with too many digits"),
        ('{"pod": {"metadata": {"name": "\\ud800"}}}', "half a UTF-16 surrogate pair"),
        ('{"pod": ', "not valid JSON (Expecting value at line 1 column 9)"),
        ("plain words", "not valid JSON"),
    ]
    for body, expected in cases:
        status, reply = await send(plugin, "POST", "/create", body)
        assert status == 400 and expected in reply["error"], (body[:40], reply)
    log = plugin.log.read_text()
    assert "Traceback" not in log and "status=500" not in log


async def test_names_and_uids_must_be_what_kubernetes_allows(plugin) -> None:
    cases = [
        ("uid", "b-c-d-e", "is not a UUID"),
        ("uid", "0f8e6a2c-3b1d-4c5e-9f7a-1b2c3d4e5f60-0f8e6a2c", "is 45 characters long; Kubernetes allows at most 36"),
        ("namespace", "Physics", "is not a DNS-1123 label"),
        ("namespace", "a" * 64, "is 64 characters long; Kubernetes allows at most 63"),
        ("namespace", "", "pod.metadata.namespace is missing"),
        ("name", "reco_1", "is not a DNS-1123 subdomain"),
        ("name", "a..b", "is not a DNS-1123 subdomain"),
        ("name", "x" * 254, "is 254 characters long; Kubernetes allows at most 253"),
    ]
    for field, value, expected in cases:
        p = pod("ok", [container("c", "true")])
        p["metadata"][field] = value
        status, reply = await send(plugin, "POST", "/create", json.dumps(retrieved(p)))
        assert status == 400 and f"pod.metadata.{field}" in reply["error"] and expected in reply["error"], reply
    # a megabyte-long name is neither echoed back nor logged in full
    huge = pod("ok", [container("c", "true")])
    huge["metadata"]["name"] = "n" * 1_000_000
    status, reply = await send(plugin, "POST", "/create", json.dumps(retrieved(huge)))
    assert status == 400 and len(reply["error"]) < 300
    ghost = pod("ghost", [container("c", "true")])
    ghost["metadata"]["name"] = "g" * 1_000_000
    status, reply = await send(plugin, "POST", "/delete", json.dumps(ghost))
    assert status == 404 and len(reply["error"]) < 500 and "(1000000 characters)" in reply["error"]
    assert max(len(line) for line in plugin.log.read_text().splitlines()) < 2000
    assert not list((plugin.data_root / "jobs").iterdir())
