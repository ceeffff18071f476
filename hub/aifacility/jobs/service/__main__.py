"""Entry point of the hub-managed service: `python -m aifacility.jobs.service`.

Reads what JupyterHub gives every managed service (JUPYTERHUB_SERVICE_URL, _PREFIX, _API_URL, _API_TOKEN), the
facility file (AIFACILITY_FACILITY) and the hub's Kubernetes identity (its service account in a pod, else
KUBECONFIG). It keeps no state of its own: the Jobs in the cluster are the record (it follows them with a watch), so it
can die at any time. Beside the API it keeps running jobs' IAM token files fresh (`aifacility.jobs.tokens`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web

from aifacility.facility import load_facility
from aifacility.hubapi import HubClient
from aifacility.hubservice import die_with_hub, serve_until_stopped
from aifacility.jobs.cluster import JobsCluster, api_client
from aifacility.jobs.service.handlers import MAX_BODY_BYTES, JobAPI, JobsAPI, LogsAPI, OptionsAPI
from aifacility.jobs.tokens import JobTokenKeeper
from aifacility.quotas.store import DB_ENV, PolicyStore
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
        (url_path_join(prefix, "api/options"), OptionsAPI),
    ]
    return web.Application(
        routes,
        facility=facility,
        policies=PolicyStore(os.environ[DB_ENV]) if os.environ.get(DB_ENV) else None,
        cluster=JobsCluster(await api_client(), facility),
        hub=HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]),
        cookie_secret=secrets.token_bytes(32),
    )


async def serve() -> None:
    app = await make_app()
    cluster: JobsCluster = app.settings["cluster"]
    keeper = JobTokenKeeper(cluster.api, cluster.ns, app.settings["hub"])
    background = [asyncio.create_task(cluster.unfinished_jobs.run()), asyncio.create_task(keeper.run())]
    try:
        # Bodies above this are dropped by tornado; the handlers answer 413 with a message up to it.
        await serve_until_stopped(app, "http://127.0.0.1:10102", 4 * MAX_BODY_BYTES, log)
    finally:
        for task in background:
            task.cancel()


def main() -> None:
    die_with_hub()
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    install_log_filter()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
