"""Entry point of the hub-managed admin service: `python -m aifacility.admin.service`.

Reads what JupyterHub gives every managed service (JUPYTERHUB_SERVICE_URL, _PREFIX, _API_URL, _API_TOKEN), the
facility file (AIFACILITY_FACILITY), the policy database (AIFACILITY_POLICY_DB) and the hub's Kubernetes
identity (its service account in a pod, else KUBECONFIG), with which it writes the groups' ClusterQueues. With
the accounting ledger (AIFACILITY_ACCOUNTING_DB) it keeps the budgets too, stopping sessions it finds in the
spawner's reservations (AIFACILITY_QUOTA_DB). It runs events too (their API, and their end: temporary accounts
removed, the usage report made). Its state is the database: it may die at any time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import HTTPClientError

from aifacility.accounting.ledger import DB_ENV as LEDGER_ENV
from aifacility.accounting.ledger import Ledger
from aifacility.admin.budgets import BudgetKeeper, KueueHolds
from aifacility.admin.policies import PolicyService
from aifacility.admin.queues import QueueSync
from aifacility.admin.service.events import EVENT, EventAPI, EventCodesAPI, EventsAPI
from aifacility.admin.service.handlers import (
    MAX_BODY_BYTES,
    NAME,
    AuditAPI,
    BudgetsAPI,
    OverviewPage,
    PoliciesAPI,
    PolicyAPI,
    PolicyPage,
    UserLookupPage,
)
from aifacility.events.keeper import EventKeeper
from aifacility.events.prepull import PrePuller
from aifacility.events.reservation import EventsInForce
from aifacility.events.service import EventService
from aifacility.events.store import EventStore, utcnow
from aifacility.facility import load_facility
from aifacility.hubapi import HubClient
from aifacility.hubservice import die_with_hub, fail, serve_until_stopped
from aifacility.jobs.cluster import api_client
from aifacility.quotas.budgets import BudgetBook
from aifacility.quotas.policy import Scope
from aifacility.quotas.reservations import QuotaStore
from aifacility.quotas.store import DB_ENV, PolicyStore

log = logging.getLogger("aifacility.admin")
# How often the ClusterQueues are brought back to the policies in force (see queues.py).
KEEP_QUEUES_SECONDS = float(os.environ.get("AIFACILITY_ADMIN_QUEUE_SYNC_SECONDS", "60"))
# How often budgets are checked against the ledger (see budgets.py).
CHECK_BUDGETS_SECONDS = float(os.environ.get("AIFACILITY_BUDGET_CHECK_SECONDS", "60"))
# How often ended events are cleaned up (see events/keeper.py).
CHECK_EVENTS_SECONDS = float(os.environ.get("AIFACILITY_EVENT_CHECK_SECONDS", "30"))


async def make_app() -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/admin/")
    hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])

    async def exists(scope: Scope, name: str) -> bool:
        try:
            return (await (hub.group(name) if scope == "group" else hub.user(name))) is not None
        except (HTTPClientError, OSError) as e:
            raise fail(502, f"The hub did not answer whether {scope} '{name}' exists ({e}); try again.") from None

    facility = load_facility()
    cluster = await api_client() if facility.queues.enabled else None
    store = PolicyStore(os.environ[DB_ENV])
    ledger = Ledger(os.environ[LEDGER_ENV]) if os.environ.get(LEDGER_ENV) else None
    events = EventStore(store.engine)
    in_force = EventsInForce(events, ttl=0)  # the admin service reads them at each reconciliation
    policies = PolicyService(facility, store, QueueSync(cluster), exists, budgets=ledger is not None,
                             overlay=lambda f: in_force.overlay(f, utcnow()))
    keeper = None
    if ledger is not None:
        quota_db = os.environ.get("AIFACILITY_QUOTA_DB")
        keeper = BudgetKeeper(facility, BudgetBook(store.engine), ledger, store.snapshot,
                              KueueHolds(cluster, facility.namespace) if cluster else None,
                              QuotaStore(quota_db) if quota_db else None, hub.stop_server)
    event_keeper = EventKeeper(facility, events, ledger, hub.delete_user, utcnow, policies.reconcile,
                               QuotaStore(os.environ["AIFACILITY_QUOTA_DB"]) if os.environ.get("AIFACILITY_QUOTA_DB")
                               else None, hub.stop_server, PrePuller(cluster, facility))
    api = url_path_join(prefix, "api")
    kind = r"(?P<kind>groups|users)"
    return web.Application(
        [
            (prefix, OverviewPage),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            (url_path_join(prefix, "users"), UserLookupPage),
            (url_path_join(prefix, f"{kind}/{NAME}"), PolicyPage),
            (url_path_join(api, "policies"), PoliciesAPI),
            (url_path_join(api, "audit"), AuditAPI),
            (url_path_join(api, "budgets"), BudgetsAPI),
            (url_path_join(api, f"{kind}/{NAME}"), PolicyAPI),
            (url_path_join(api, "events"), EventsAPI),
            (url_path_join(api, f"events/{EVENT}"), EventAPI),
            (url_path_join(api, f"events/{EVENT}/codes"), EventCodesAPI),
        ],
        policies=policies,
        events=EventService(facility, events, policies.reconcile),
        event_keeper=event_keeper,
        budget_keeper=keeper,
        prefix=prefix,
        cookie_secret=secrets.token_bytes(32),
    )


async def serve() -> None:
    app = await make_app()
    policies: PolicyService = app.settings["policies"]
    tasks = [asyncio.create_task(policies.queues.keep(policies.reconcile, KEEP_QUEUES_SECONDS)),
             asyncio.create_task(app.settings["event_keeper"].run(CHECK_EVENTS_SECONDS))]
    budgets: BudgetKeeper | None = app.settings["budget_keeper"]
    if budgets is not None:
        tasks.append(asyncio.create_task(budgets.run(CHECK_BUDGETS_SECONDS)))
    try:
        await serve_until_stopped(app, "http://127.0.0.1:10104", 4 * MAX_BODY_BYTES, log)
    finally:
        for task in tasks:
            task.cancel()


def main() -> None:
    die_with_hub()
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
