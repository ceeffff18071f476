"""Adding to the notebook spawner's settings from several parts of the hub configuration.

traitlets applies, for each trait, the section of the most specific class that sets it, and does not merge it with
its parents' sections: once `c.FacilitySpawner.environment` exists, a `c.Spawner.environment` (the login part's
token variables) or a `c.KubeSpawner.environment` (Zero to JupyterHub's `singleuser.extraEnv`) is ignored. Every
part that adds environment variables or arguments for the notebooks (spawner, login, lifetimes) goes through
these helpers: they merge the sections along the configured spawner class's inheritance, base first, and write
the result to the most specific one, so whichever order the parts run in, nothing is lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyterhub.spawner import Spawner
from traitlets.utils.importstring import import_item

if TYPE_CHECKING:
    from aifacility.facility.model import Facility


def spawner_sections(c: Any) -> list[str]:
    """The config sections that configure the hub's spawner, base class first ("Spawner" if it is not known)."""
    cls = c.JupyterHub.spawner_class if "spawner_class" in c.JupyterHub else None
    if isinstance(cls, str) and "." in cls:
        try:
            cls = import_item(cls)
        except ImportError:
            cls = None
    if not isinstance(cls, type) or not issubclass(cls, Spawner):
        return ["Spawner"]  # an entry-point name ("simple") or unset: the generic section reaches it
    return [k.__name__ for k in reversed(cls.__mro__) if isinstance(k, type) and issubclass(k, Spawner)]


def add_spawner_environment(c: Any, env: Mapping[str, Any]) -> None:
    """Add variables to the notebooks' environment; `env` wins over what earlier parts set under the same name."""
    sections = spawner_sections(c)
    merged: dict[str, Any] = {}
    for name in sections:
        if "environment" in c[name]:
            merged.update(c[name].environment)
    c[sections[-1]].environment = {**merged, **env}


def add_spawner_args(c: Any, args: Iterable[str]) -> None:
    """Append command-line arguments for the notebook servers, each once, after those set before."""
    sections = spawner_sections(c)
    merged: list[str] = []
    for name in sections:
        for arg in c[name].args if "args" in c[name] else []:
            if arg not in merged:
                merged.append(arg)
    c[sections[-1]].args = [*merged, *(a for a in args if a not in merged)]


def current(section: Any, key: str, default: Any) -> Any:
    """A config value already set (by the lead config or another part's configure), else `default`."""
    return section[key] if key in section else default


def hub_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The hub's data directory (`data_dir`, else $AIFACILITY_HUB_DATA, else the chart's /srv/jupyterhub), made."""
    data = Path(data_dir or os.environ.get("AIFACILITY_HUB_DATA", "/srv/jupyterhub"))
    data.mkdir(parents=True, exist_ok=True)
    return data


def service_facility_file(data: Path, service: str, facility: Facility) -> Path:
    """`<data>/<service>-facility.json`: the facility the hub was configured with, for a hub-managed service to
    enforce exactly that (not a facility file that may have changed on disk since)."""
    path = data / f"{service}-facility.json"
    path.write_text(json.dumps(facility.model_dump(mode="json"), indent=1))
    return path
