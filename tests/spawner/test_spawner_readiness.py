"""FacilitySpawner's own check, at the end of a start, that the notebook server answers (see _server_answers)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from aifacility.launcher.supervisor import free_port


async def test_start_returns_once_the_server_answers_and_not_before(make_spawner: Any, make_user: Any) -> None:
    spawner = make_spawner(make_user("bob", "physics"), profile="cpu-small")
    spawner.server_poll_interval = 0.05
    asked: list[int] = []
    status = {"code": 503}  # booting: what a proxy or a half-started server may answer
    three_asks = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        asked.append(status["code"])
        if len(asked) >= 3:
            three_asks.set()
        return web.Response(status=status["code"])

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        waiting = asyncio.ensure_future(spawner._server_answers(f"http://127.0.0.1:{port}"))
        await asyncio.wait_for(three_asks.wait(), 10)
        assert not waiting.done()  # a 5xx is not an answer: it keeps asking
        status["code"] = 302  # the server's redirect to its login: it is up (what JupyterHub accepts)
        await asyncio.wait_for(waiting, 10)
        assert asked[-1] == 302
    finally:
        await runner.cleanup()


async def test_a_server_that_never_answers_is_left_to_the_hubs_own_timeout(make_spawner: Any,
                                                                            make_user: Any) -> None:
    spawner = make_spawner(make_user("bob", "physics"), profile="cpu-small")
    spawner.http_timeout, spawner.server_poll_interval = 1, 0.05  # an Integer trait: seconds
    await spawner._server_answers(f"http://127.0.0.1:{free_port()}")  # returns (no exception) after http_timeout
    # TLS to the server needs the hub's certificates: nothing is checked here, JupyterHub checks it itself.
    spawner.http_timeout = 120
    await asyncio.wait_for(spawner._server_answers("https://127.0.0.1:1"), 5)
