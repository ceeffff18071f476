"""Spawn a server through the JupyterHub REST API and time it until the server itself answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

Api = Callable[..., requests.Response]


def spawn_and_wait(api: Api, base_url: str, user: str, options: dict[str, Any] | None = None,
                   timeout: float = 180, posted: list[float] | None = None) -> float:
    """POST /users/{user}/server, then poll the server's own /api/status through the proxy; seconds taken.

    `posted`, when given, gets the wall-clock time of the POST appended (to match against the hub's log)."""
    if api("GET", f"/users/{user}").status_code == 404:
        api("POST", f"/users/{user}").raise_for_status()
    token = api("POST", f"/users/{user}/tokens", json={"expires_in": 3600}).json()["token"]
    if posted is not None:
        posted.append(time.time())
    t0 = time.perf_counter()
    r = api("POST", f"/users/{user}/server", json=options or {})
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn of {user} refused: {r.status_code} {r.text}")
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        try:
            s = requests.get(f"{base_url}/user/{user}/api/status", headers={"Authorization": f"token {token}"},
                             timeout=5, allow_redirects=False)
            if s.status_code == 200 and "started" in s.json():
                return time.perf_counter() - t0
        except (requests.ConnectionError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server of {user} did not answer within {timeout} s")


def stop_and_wait(api: Api, user: str, timeout: float = 120) -> None:
    api("DELETE", f"/users/{user}/server")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        u = api("GET", f"/users/{user}").json()
        if not u.get("servers"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the server of {user} did not stop within {timeout} s")
