"""Entry point of the hub-managed usage service: `python -m aifacility.accounting.service`.

Reads what JupyterHub gives every managed service (JUPYTERHUB_SERVICE_URL, _PREFIX, _API_URL, _API_TOKEN), the
ledger's URL (AIFACILITY_ACCOUNTING_DB), the facility file (AIFACILITY_FACILITY: power figures, MIG fractions) and
the policy database (AIFACILITY_POLICY_DB: where the budgets stand).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.service.handlers import FacilityReport, MyBudgets, MyUsage
from aifacility.facility import load_facility
from aifacility.hubapi import HubClient
from aifacility.hubservice import die_with_hub, serve_until_stopped
from aifacility.quotas.budgets import BudgetBook
from aifacility.quotas.store import DB_ENV as POLICY_DB_ENV
from aifacility.quotas.store import PolicyStore


def make_app() -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/usage/")
    return web.Application(
        [
            (prefix, MyUsage),
            (url_path_join(prefix, "admin"), FacilityReport),
            (url_path_join(prefix, "budgets"), MyBudgets),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        ledger=Ledger(),
        budgets=BudgetBook(PolicyStore(os.environ[POLICY_DB_ENV]).engine) if os.environ.get(POLICY_DB_ENV) else None,
        accounting=load_facility().accounting,
        prefix=prefix,
        hub=HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]),
        cookie_secret=secrets.token_bytes(32),
    )


def main() -> None:
    die_with_hub()
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    asyncio.run(serve_until_stopped(make_app(), "http://127.0.0.1:10103", 64 * 1024,
                                    logging.getLogger("aifacility.accounting")))


if __name__ == "__main__":
    main()
