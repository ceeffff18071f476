"""What every hub-managed service of the facility shares: it dies with its hub, and answers errors in words.

Hub-managed services die with their hub.

JupyterHub starts each managed service (the spawn keeper, the lifetimes service, the culler) as a child in a
session of its own, and stops it only when it shuts down cleanly. A hub killed with SIGKILL (or by the OOM
killer) leaves them running with init as parent: the restarted hub then starts a second keeper and culler, and
its lifetimes service cannot bind the port the orphan still holds. Linux's parent-death signal ties a service to
the hub that started it, as a container's processes are tied to their pod.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import logging
import os
import signal
import sys
from http import HTTPStatus
from urllib.parse import urlparse

from tornado import web

PR_SET_PDEATHSIG = 1


def die_with_hub(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent (the hub) dies; exit at once if it already
    has. Call it first thing in a managed service's main. Outside Linux this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    # The hub may have died between our start and the prctl: the signal was then never armed for it.
    if parent == 1 or os.getppid() != parent:
        sys.exit("the hub that started this service is gone")


def fail(status: int, message: str) -> web.HTTPError:
    """An HTTPError with a message for people. Tornado treats `log_message` as a %-format (and logs it), so the
    message, which may quote user input such as a user name or a JSON key, goes in as an argument."""
    return web.HTTPError(status, "%s", message)


def error_text(exc: BaseException | None, status: int) -> str:
    """The message of an HTTPError made by `fail`, else the status's phrase (never a traceback)."""
    if isinstance(exc, web.HTTPError) and exc.log_message:
        return exc.log_message % exc.args
    return HTTPStatus(status).phrase


async def serve_until_stopped(app: web.Application, default_url: str, max_body_size: int,
                              log: logging.Logger) -> None:
    """Listen where JupyterHub says (JUPYTERHUB_SERVICE_URL) until the hub stops the service with SIGTERM.

    A DNS name (the hub's Kubernetes Service) means every interface of the pod. Nothing is pending at a stop:
    the services commit or create before they answer."""
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", default_url))
    host = url.hostname or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = ""
    app.listen(url.port or 80, host, max_body_size=max_body_size)
    # Named, because the hub's log interleaves every managed service's lines.
    log.info("%s service on %s", os.environ.get("JUPYTERHUB_SERVICE_NAME", "hub"), url.geturl())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
