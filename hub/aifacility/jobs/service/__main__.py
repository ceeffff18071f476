"""Entry point of the hub-managed service: `python -m aifacility.jobs.service`.

Reads what JupyterHub gives every managed service (JUPYTERHUB_SERVICE_URL, _PREFIX, _API_URL, _API_TOKEN), the
facility file (AIFACILITY_FACILITY) and the hub's Kubernetes identity (its service account in a pod, else
KUBECONFIG). It keeps no state of its own: the Jobs in the cluster are the record, so it can die at any time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import signal
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web

from aifacility.facility import load_facility
from aifacility.hubapi import HubClient
from aifacility.hubservice import die_with_hub
from aifacility.jobs.cluster import JobsCluster, api_client
from aifacility.jobs.service.handlers import MAX_BODY_BYTES, JobAPI, JobsAPI, LogsAPI
from aifacility.secrecy import install_log_filter

log = logging.getLogger("aifacility.jobs")


async def make_app() -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/jobs/")
    facility = load_facility()
    api = url_path_join(prefix, "api/jobs")
    name = r"(?P<name>[^/]{1,253})"
    routes = [
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        (api, JobsAPI),
        (f"{api}/{name}", JobAPI),
        (f"{api}/{name}/logs", LogsAPI),
    ]
    return web.Application(
        routes,
        facility=facility,
        cluster=JobsCluster(await api_client(), facility),
        hub=HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]),
        cookie_secret=secrets.token_bytes(32),
    )


async def serve() -> None:
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10102"))
    host = url.hostname or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = ""  # a DNS name (the hub's Kubernetes Service): every interface of the pod
    # Bodies above this are dropped by tornado; the handlers answer 413 with a message up to it.
    (await make_app()).listen(url.port or 80, host, max_body_size=4 * MAX_BODY_BYTES)
    log.info("jobs service on %s", url.geturl())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


def main() -> None:
    die_with_hub()
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    install_log_filter()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
