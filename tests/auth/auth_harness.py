"""A real JupyterHub (+ configurable-http-proxy, SimpleLocalProcessSpawner) logging in through the embedded
OIDC provider, on free loopback ports in a temp dir. Used by the tests in this folder and by bench_login.py."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import requests

from aifacility.oidc import EmbeddedOIDCProvider
from support.hub_process import HubProcess

VENV_BIN = Path(sys.executable).parent

# The token lifetimes of the hub the tests in this folder log in to (conftest.py): short enough that the tests
# see tokens expire and get renewed, long enough for a spawn.
ACCESS_TOKEN_TTL = 20
TOKEN_MIN_LIFETIME = 8

HUB_CONFIG = '''
import json
from pathlib import Path
params = json.loads(Path(__file__).with_name("params.json").read_text())
c.ConfigurableHTTPProxy.auth_token = params["proxy_token"]
c.JupyterHub.db_url = "sqlite:///" + params["dir"] + "/hub.sqlite"
c.JupyterHub.cookie_secret_file = params["dir"] + "/cookie_secret"
c.JupyterHub.pid_file = params["dir"] + "/hub.pid"
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = params["dir"] + "/home/{username}"
c.Spawner.cmd = [params["venv_bin"] + "/jupyterhub-singleuser"]
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.options_form = (
    '<label for="profile">Profile</label>'
    '<select name="profile" id="profile"><option value="cpu-small">CPU, small</option></select>')
c.JupyterHub.services = [{"name": "aifacility-test", "api_token": params["service_token"]}]
c.JupyterHub.load_roles = [{"name": "aifacility-test", "services": ["aifacility-test"], "scopes": [
    "admin:users", "admin:auth_state", "admin:servers", "admin:server_state", "tokens", "admin:groups"]}]
if params["authenticator"] == "iam":
    from aifacility.auth import configure, load_or_create_crypt_key
    from aifacility.facility import load_facility
    configure(c, load_facility(), issuer=params["issuer"], client_secret=params["client_secret"],
              callback_url=params["callback_url"],
              crypt_key=load_or_create_crypt_key(params["dir"] + "/auth_state.key"),
              token_file=params["dir"] + "/sessions/{username}/token",
              token_min_lifetime=params["token_min_lifetime"])
    # a service like the jobs service, holding the scope that reads any user's fresh IAM token
    from aifacility.auth.jobs import IAM_TOKENS_SCOPE, IAM_TOKENS_SCOPE_MODEL
    c.JupyterHub.custom_scopes = {IAM_TOKENS_SCOPE: IAM_TOKENS_SCOPE_MODEL}
    c.JupyterHub.services.append({"name": "token-reader", "api_token": params["reader_token"]})
    c.JupyterHub.load_roles.append({"name": "token-reader", "services": ["token-reader"],
                                    "scopes": [IAM_TOKENS_SCOPE]})
else:
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = "demo"
    c.Authenticator.allow_all = True
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalHub(HubProcess):
    provider: EmbeddedOIDCProvider | None = None
    token_min_lifetime: int = 120
    reader_token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def service_token(self) -> str:
        return self.token

    @property
    def callback_url(self) -> str:
        return f"{self.url}/hub/oauth_callback"

    def start(self) -> LocalHub:
        self.workdir.mkdir(parents=True, exist_ok=True)
        params: dict[str, Any] = {
            "proxy_token": secrets.token_hex(16), "dir": str(self.workdir), "venv_bin": str(VENV_BIN),
            "service_token": self.token, "token_min_lifetime": self.token_min_lifetime,
            "reader_token": self.reader_token,
            "authenticator": "iam" if self.provider else "dummy",
        }
        if self.provider:
            params.update(issuer=self.provider.issuer, client_secret=self.provider.client_secret,
                          callback_url=self.callback_url)
        (self.workdir / "params.json").write_text(json.dumps(params))
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
        env.pop("JUPYTERHUB_CRYPT_KEY", None)
        return self.launch(HUB_CONFIG, env=env)

    def wait_server(self, user: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{user}").json()
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return model
            time.sleep(0.5)
        raise TimeoutError(f"{user}'s server did not become ready:\n{self.log_path.read_text()[-3000:]}")

    def server_env(self, user: str) -> dict[str, str]:
        """The environment of the user's running single-user server process (what the session sees)."""
        state = self.api("GET", f"/users/{user}").json()["servers"][""]["state"]
        raw = Path(f"/proc/{state['pid']}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)

    def token_file(self, user: str) -> Path:
        return self.workdir / "sessions" / user / "token"


def provider_login_page(session: requests.Session, hub: LocalHub) -> requests.Response:
    """Start a login at the hub; return the provider's login page it redirects to."""
    resp = session.get(f"{hub.url}/hub/oauth_login", timeout=30)
    resp.raise_for_status()
    return resp


def submit_login(session: requests.Session, login_page: requests.Response, username: str,
                 password: str = "demo") -> str:
    """Post the provider's login form; follow the provider's redirects; return the hub callback URL."""
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', login_page.text).group(1))
    resp = session.post(urljoin(login_page.url, action), data={"username": username, "password": password},
                        allow_redirects=False, timeout=30)
    while resp.status_code in (302, 303) and not urlparse(resp.headers["Location"]).path.endswith("/oauth_callback"):
        resp = session.get(urljoin(resp.url, resp.headers["Location"]), allow_redirects=False, timeout=30)
    if resp.status_code not in (302, 303):
        raise AssertionError(f"the provider did not redirect back to the hub: {resp.status_code} {resp.text[:500]}")
    return urljoin(resp.url, resp.headers["Location"])


def login(hub: LocalHub, username: str, password: str = "demo") -> tuple[requests.Session, requests.Response]:
    session = requests.Session()
    callback = submit_login(session, provider_login_page(session, hub), username, password)
    return session, session.get(callback, timeout=60)
