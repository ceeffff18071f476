"""Readiness probes (httpGet, tcpSocket, exec) as the kubelet's prober runs them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

ExecRunner = Callable[[list[str], float], Awaitable[int]]  # (command, timeout) -> exit code


def _port(spec: Mapping[str, Any], container: Mapping[str, Any]) -> int:
    port = spec.get("port")
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p.get("containerPort", 0))
    raise ValueError(f"the probe's port {port!r} names no port of the container")


async def probe_once(probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str,
                     exec_runner: ExecRunner) -> bool:
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            scheme = str(spec.get("scheme") or "HTTP").lower()
            host = spec.get("host") or pod_ip
            path = spec.get("path") or "/"
            headers = {h["name"]: h.get("value", "") for h in spec.get("httpHeaders") or []}
            url = f"{scheme}://{host}:{_port(spec, container)}{path if path.startswith('/') else '/' + path}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                    session.get(url, headers=headers, ssl=False, allow_redirects=False) as resp:
                return 200 <= resp.status < 400
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(spec.get("host") or pod_ip, _port(spec, container)), timeout)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return True
        if "exec" in probe:
            return await exec_runner(list(probe["exec"].get("command") or []), timeout) == 0
    except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
        return False
    return True


async def readiness_loop(probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str,
                         exec_runner: ExecRunner, set_ready: Callable[[bool], None]) -> None:
    """Probe until cancelled; report each change of readiness through set_ready.

    Until the first success the probe runs every second at most (not every `periodSeconds`), so that a
    notebook whose probe period is 10 s becomes Ready when it answers, not up to 10 s later.
    """
    period = float(probe.get("periodSeconds") or 10)
    success_needed = int(probe.get("successThreshold") or 1)
    failure_needed = int(probe.get("failureThreshold") or 3)
    await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
    ready = False
    successes = failures = 0
    while True:
        ok = await probe_once(probe, container, pod_ip, exec_runner)
        if ok:
            successes, failures = successes + 1, 0
            if not ready and successes >= success_needed:
                ready = True
                set_ready(True)
        else:
            successes, failures = 0, failures + 1
            if ready and failures >= failure_needed:
                ready = False
                set_ready(False)
        await asyncio.sleep(period if ready else min(period, 1.0))


async def liveness_loop(probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str,
                        exec_runner: ExecRunner, on_failure: Callable[[], Awaitable[None]]) -> None:
    """Probe every periodSeconds; after failureThreshold failures in a row, call on_failure once and stop."""
    period = float(probe.get("periodSeconds") or 10)
    failure_needed = int(probe.get("failureThreshold") or 3)
    await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
    failures = 0
    while True:
        if await probe_once(probe, container, pod_ip, exec_runner):
            failures = 0
        else:
            failures += 1
            if failures >= failure_needed:
                await on_failure()
                return
        await asyncio.sleep(period)
