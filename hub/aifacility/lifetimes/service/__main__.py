"""Entry point of the hub-managed service: `python -m aifacility.lifetimes.service`.

Reads what JupyterHub gives every managed service (JUPYTERHUB_SERVICE_URL, _PREFIX, _API_URL, _API_TOKEN) plus
the facility file (AIFACILITY_FACILITY) and the extension store (AIFACILITY_LIFETIMES_DB or AIFACILITY_HUB_DATA).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web

from aifacility.facility import load_facility
from aifacility.hubapi import HubClient
from aifacility.hubservice import die_with_hub, serve_until_stopped
from aifacility.lifetimes.service.handlers import ExtendAPI, PageHandler, ServerSessionAPI, UserSessionsAPI
from aifacility.lifetimes.store import ExtensionStore
from aifacility.secrecy import install_log_filter

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


# What a request's body may be before the connection is dropped (the handlers answer above MAX_BODY_BYTES).
MAX_SERVER_BODY = 1024 * 1024

# Rows of server runs spawned longer ago than the longest cap plus this are of servers long gone.
KEEP_AFTER_CAP = timedelta(days=7)


def make_app() -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/lifetimes/")
    facility = load_facility()
    store = ExtensionStore()
    longest = max(timedelta(hours=p.max_lifetime_hours) for p in facility.profiles)
    dropped = store.forget_before(datetime.now(UTC) - longest - KEEP_AFTER_CAP)
    logging.getLogger("aifacility.lifetimes").info("forgot %d record(s) of long-stopped servers", dropped)
    user = r"(?P<user>[^/]+)"
    server = r"(?:server|servers/(?P<server>[^/]+))"
    api = url_path_join(prefix, "api/users/")
    routes = [
        (prefix, PageHandler),
        (url_path_join(prefix, "extend"), PageHandler),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        (f"{api}{user}", UserSessionsAPI),
        (f"{api}{user}/{server}", ServerSessionAPI),
        (f"{api}{user}/{server}/extend", ExtendAPI),
    ]
    return web.Application(
        routes,
        facility=facility,
        store=store,
        hub=HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]),
        prefix=prefix,
        hub_home=url_path_join(os.environ.get("JUPYTERHUB_BASE_URL", "/"), "hub/home"),
        # OAuth cookies are per process: after a restart the browser silently signs in again.
        cookie_secret=secrets.token_bytes(32),
        template_path=str(TEMPLATES),
    )


async def serve() -> None:
    # Bodies are a few bytes; a larger one is refused by the handlers with a message (the extension API reads
    # up to DISCARD_LIMIT before its 413, see handlers.py), and this bounds what a form post may buffer.
    await serve_until_stopped(make_app(), "http://127.0.0.1:10101", MAX_SERVER_BODY,
                              logging.getLogger("aifacility.lifetimes"))


def main() -> None:
    die_with_hub()
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    install_log_filter()  # the service's output goes to the hub's log: no session identifiers in it
    asyncio.run(serve())


if __name__ == "__main__":
    main()
