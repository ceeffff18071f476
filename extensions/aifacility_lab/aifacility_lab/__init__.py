"""aifacility-lab: the facility inside JupyterLab (a status-bar item, a jobs sidebar, notifications), and the
server extension that reaches the hub's services with the session's own token (see CONTRACT.md)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "aifacility-lab"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aifacility_lab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from aifacility_lab.handlers import routes
    from aifacility_lab.services import FacilityServices, SessionEnvironment

    web_app = server_app.web_app
    web_app.settings["aifacility_services"] = FacilityServices(SessionEnvironment.from_environ(),
                                                               server_app.root_dir)
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    server_app.log.info("aifacility-lab: the facility's status, jobs and Dask clusters at %saifacility/",
                        web_app.settings["base_url"])
