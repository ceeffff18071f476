"""The Dask gateway as a hub-managed service: `python -m aifacility.dask`.

The hub starts it with its API token and URLs (JUPYTERHUB_*); its proxy listens where the hub's service entry
says (JUPYTERHUB_SERVICE_URL). The facility, the database and its key come from the environment `configure`
writes (AIFACILITY_FACILITY, AIFACILITY_DASK_DB, DASK_GATEWAY_ENCRYPT_KEYS).
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit


def main(argv: list[str] | None = None) -> None:
    from aifacility.hubservice import die_with_hub

    die_with_hub()  # no orphan gateway when the hub is killed (see hubservice)
    from dask_gateway_server.app import DaskGateway
    from traitlets.config import Config

    from aifacility.dask.config import gateway_config
    from aifacility.facility import load_facility

    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8000"))
    c = Config()
    gateway_config(c, load_facility(), listen=f"{url.hostname}:{url.port}",
                   db_url=os.environ.get("AIFACILITY_DASK_DB"), api_url=os.environ.get("AIFACILITY_DASK_API_URL"),
                   policy_db=os.environ.get("AIFACILITY_POLICY_DB"))
    c.DaskGateway.config_file = os.devnull  # everything is above; never a stray dask_gateway_config.py
    DaskGateway.launch_instance(argv=sys.argv[1:] if argv is None else argv, config=c)


if __name__ == "__main__":
    main()
