"""The plugin answers only its virtual kubelet: every endpoint needs the shared bearer token, `serve` refuses an
open address without one, and every request (refused ones with their reason) leaves an access-log line that
never holds a token."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest
from interlink_helpers import PluginProcess, container, pod, retrieved

from aifacility_interlink.client import PluginClient, PluginError, read_token_file, token_from_env


def rows(plugin: PluginProcess) -> list[tuple[str, ...]]:
    db = sqlite3.connect(plugin.data_root / "plugin.sqlite")
    try:
        return db.execute("SELECT uid, phase FROM pods").fetchall()
    finally:
        db.close()


async def raw(url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.request(method, url + path, data=body, headers=headers) as r:
        return r.status, await r.text(), r.headers.get("WWW-Authenticate", "")


async def serve(*args: str, tmp_path: Path) -> tuple[int | None, str]:
    """Run `serve` that is expected to refuse to start; its exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aifacility_interlink", "serve", "--backend", "slurm", "--runtime", "none",
        "--data-root", str(tmp_path / "data"), *args, stderr=PIPE,
        env={**os.environ, "SLURM_CONF": str(tmp_path / "none.conf")})
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, err.decode()


async def test_forged_create_is_refused_and_nothing_is_created(plugin_factory) -> None:
    plugin = plugin_factory(None, runtime="none")
    assert plugin.token is not None
    forged = pod("forged", [container("c", "echo pwned")], namespace="aifacility")
    body = retrieved(forged)
    for headers, reason in [({}, "no bearer token"),
                            ({"Authorization": "Bearer " + "0" * 64}, "wrong bearer token"),
                            ({"Authorization": f"Basic {plugin.token}"}, "no bearer token"),
                            ({"Authorization": "Bearer"}, "no bearer token")]:
        status, text, challenge = await raw(plugin.url, "POST", "/create", json.dumps(body).encode(),
                                            {"Content-Type": "application/json", **headers})
        assert status == 401, text
        assert reason in json.loads(text)["error"] and "virtual kubelet" in json.loads(text)["error"]
        assert challenge.startswith("Bearer")
    assert not list((plugin.data_root / "jobs").iterdir())
    assert rows(plugin) == []
    # the refusals are in the access log with their reason and the caller's address; no token is
    lines = plugin.access_log()
    refused = [f for f in lines if f.get("path") == "/create"]
    assert [f["status"] for f in refused] == ["401"] * 4
    assert [f["reason"] for f in refused] == ["no bearer token", "wrong bearer token", "no bearer token",
                                              "no bearer token"]
    assert all(f["method"] == "POST" and f["client"].startswith("127.0.0.1:") and float(f["ms"]) >= 0
               for f in refused)
    text = plugin.log.read_text()
    assert plugin.token not in text and "0" * 64 not in text
    assert "Traceback" not in text


async def test_every_endpoint_needs_the_token(plugin_factory) -> None:
    plugin = plugin_factory(None, runtime="none")
    for method, path in [("GET", "/status"), ("POST", "/delete"), ("GET", "/getLogs"), ("POST", "/create"),
                         ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/nowhere")]:
        status, _, _ = await raw(plugin.url, method, path, b"[]", {"Content-Type": "application/json"})
        assert status == 401, path
    # the virtual kubelet's client sends it
    async with plugin.client() as c:
        assert (await c.ping()).status == "ok"
    async with PluginClient(plugin.url) as anonymous:
        with pytest.raises(PluginError) as err:
            await anonymous.ping()
    assert err.value.status == 401
    ok = [f for f in plugin.access_log() if f["status"] == "200"]
    assert ok and ok[-1]["path"] == "/status" and ok[-1]["pods"] == "0" and "reason" not in ok[-1]
    assert plugin.token is not None and plugin.token not in plugin.log.read_text()


async def test_serve_refuses_an_open_address_without_a_token(tmp_path: Path) -> None:
    code, err = await serve("--listen", "0.0.0.0:4999", tmp_path=tmp_path)
    assert code == 2 and "refusing to listen on 0.0.0.0:4999 without a token" in err and "--token-file" in err
    code, err = await serve("--listen", "[::]:4999", tmp_path=tmp_path)
    assert code == 2 and "without a token" in err


async def test_bad_token_files_are_refused_at_start(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("letmein\n")
    code, err = await serve("--listen", "127.0.0.1:4999", "--token-file", str(short), tmp_path=tmp_path)
    assert code == 2 and "holds 7 characters; a token needs at least 16" in err
    code, err = await serve("--listen", "127.0.0.1:4999", "--token-file", str(tmp_path / "absent"), tmp_path=tmp_path)
    assert code == 2 and "cannot read the token file" in err and "absent" in err
    spaced = tmp_path / "spaced"
    spaced.write_text("two words in a token file\n")
    code, err = await serve("--listen", "127.0.0.1:4999", "--token-file", str(spaced), tmp_path=tmp_path)
    assert code == 2 and "one token on one line" in err
    assert "Traceback" not in err


def test_client_token_from_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("a" * 32 + "\n")
    assert token_from_env({"AIFACILITY_INTERLINK_TOKEN_FILE": str(f)}) == "a" * 32
    assert token_from_env({}) is None
    with pytest.raises(ValueError, match="cannot read"):
        read_token_file(tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_token_file(tmp_path / "empty")
