"""`configure(c, facility)` adds to what the hub config already holds instead of replacing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_lifetimes_policy import facility
from traitlets.config import Config

from aifacility.facility import load_facility
from aifacility.lifetimes import configure
from aifacility.lifetimes.hubpages import HubSessions


def test_configure_merges_with_existing_services_roles_and_templates(tmp_path: Path) -> None:
    c = Config()
    c.JupyterHub.services = [{"name": "aifacility-admin", "api_token": "x"}]
    c.JupyterHub.load_roles = [{"name": "aifacility-admin", "scopes": ["admin:users"], "services": ["x"]},
                               {"name": "user", "scopes": ["self", "read:groups"]}]
    c.JupyterHub.template_paths = ["/elsewhere"]
    c.Spawner.environment = {"KEEP": "1"}
    c.Authenticator.admin_users = {"root-admin"}
    configure(c, facility(), data_dir=tmp_path, url="http://hub:10101")

    services = {s["name"]: s for s in c.JupyterHub.services}
    assert set(services) == {"aifacility-admin", "lifetimes", "lifetimes-culler"}
    assert services["lifetimes"]["url"] == "http://hub:10101"
    assert services["lifetimes"]["environment"]["AIFACILITY_LIFETIMES_DB"] == str(tmp_path / "lifetimes.sqlite")
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["user"]["scopes"] == ["self", "read:groups", "access:services!service=lifetimes",
                                       "custom:lifetimes:extend!user"]
    assert roles["lifetimes-admin"]["users"] == ["root-admin"]
    assert "admin:users" not in roles["lifetimes-culler"]["scopes"]  # least privilege: no user management
    # from inside the session (the JupyterLab extension's status bar): read and extend its own user's sessions
    assert roles["server"]["scopes"][-2:] == ["access:services!service=lifetimes", "custom:lifetimes:extend!user"]
    assert c.JupyterHub.template_paths[1:] == ["/elsewhere"]
    assert c.Spawner.environment == {"KEEP": "1",
                                     "AIFACILITY_LIFETIMES_API": "http://hub:10101/services/lifetimes/api"}
    assert isinstance(c.JupyterHub.template_vars["aifacility_lifetimes"], HubSessions)
    # the services enforce the facility the hub was given
    assert load_facility(tmp_path / "lifetimes-facility.json") == facility()


def test_a_bad_port_in_the_environment_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIFACILITY_LIFETIMES_URL", raising=False)
    monkeypatch.setenv("AIFACILITY_LIFETIMES_PORT", "http")
    with pytest.raises(ValueError, match="AIFACILITY_LIFETIMES_PORT must be a TCP port number"):
        configure(Config(), facility(), data_dir=tmp_path)


def test_hub_pages_show_nothing_to_anonymous_visitors(tmp_path: Path) -> None:
    c = Config()
    configure(c, facility(), data_dir=tmp_path)
    assert c.JupyterHub.template_vars["aifacility_lifetimes"](None)["sessions"] == []
