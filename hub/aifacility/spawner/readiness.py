"""Waiting for a started notebook server to answer, at a short fixed interval.

JupyterHub checks a server after `Spawner.start()` returns, retrying with a randomised exponential back-off whose
sleeps have grown to about 2 s by the time a notebook has booted: a server that is up could wait that long to be
used, and spawns took 2.5 s or 4.5 s at random. Checking here first, the hub's own check passes at its first try.
"""

from __future__ import annotations

import asyncio

import aiohttp


async def wait_until_answers(url: str, within_seconds: float, interval: float = 0.1) -> bool:
    """Whether `url` answered (any status below 500, as JupyterHub's wait_for_http_server accepts) in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while loop.time() < deadline:
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status < 500:
                        return True
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(interval)
    return False
