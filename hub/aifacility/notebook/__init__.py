"""Notebook-side parts of aifacility: the Jupyter server extension that keeps the IAM token file fresh (and
keeps session identifiers out of the server's log).

Enabled with `--ServerApp.jpserver_extensions=aifacility.notebook=True` (what `aifacility.auth.configure` adds
to the spawner's arguments) or `jupyter server extension enable aifacility.notebook` in an image.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aifacility.notebook.token_refresher import TokenRefresher
from aifacility.secrecy import install_log_filter

_tasks: set[asyncio.Task[None]] = set()


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aifacility.notebook"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    # The server logs the browser's hub session id (in its xsrf cookie messages): never in a log.
    install_log_filter(serverapp.log)
    refresher = TokenRefresher.from_env()
    if refresher is None:
        return

    def start() -> None:
        task = asyncio.get_running_loop().create_task(refresher.run())
        _tasks.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(_tasks.discard)

    serverapp.io_loop.add_callback(start)
