"""Container lifecycle hooks (postStart, preStop) with the kubelet's handlers: exec, httpGet, sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aifacility.embedded.nodeagent.probes import ExecRunner, probe_once


async def run_hook(handler: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str,
                   exec_runner: ExecRunner, budget: float) -> bool:
    """Run one hook within `budget` seconds; False when it failed or ran out of time."""
    if "sleep" in handler:
        await asyncio.sleep(min(float((handler["sleep"] or {}).get("seconds") or 0), budget))
        return True
    # exec and httpGet hooks share the prober's handlers; the probe timeout becomes the hook's time budget.
    try:
        return await asyncio.wait_for(
            probe_once({**handler, "timeoutSeconds": max(budget, 0.1)}, container, pod_ip, exec_runner), budget)
    except TimeoutError:
        return False
