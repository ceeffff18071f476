"""Notebook-side parts of aifacility: the Jupyter server extension that keeps the IAM token file fresh (and
keeps session identifiers out of the server's log).

Enabled with `--ServerApp.jpserver_extensions=aifacility.notebook=True` (what `aifacility.auth.configure` adds
to the spawner's arguments) or `jupyter server extension enable aifacility.notebook` in an image.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aifacility.notebook.token_refresher import TokenRefresher
from aifacility.secrecy import install_log_filter

_tasks: set[asyncio.Task[None]] = set()


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aifacility.notebook"}]


def keep_tornado_logs(server_log: logging.Logger) -> None:
    """Give tornado's loggers back to the server. Importing `distributed` (dask-labextension does, when the server
    looks for its extensions) sets `tornado` to CRITICAL and `tornado.application` to ERROR, with a stderr handler
    of its own that stops propagation: the hub authentication's messages would vanish, and whatever still got
    through would bypass the server's handlers and so the session-id filter below."""
    for name in ("tornado", "tornado.application"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    tornado = logging.getLogger("tornado")
    tornado.parent = server_log  # what jupyter_server's own logging setup does
    tornado.setLevel(server_log.level)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    keep_tornado_logs(serverapp.log)
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
