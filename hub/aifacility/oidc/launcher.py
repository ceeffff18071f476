"""Start and stop the embedded OIDC provider (`provider.mjs`, on npm `oidc-provider`) as a child process.

The provider is a real, OpenID Certified implementation; this module only writes its configuration (issuer,
the facility's client, the demo accounts, token lifetimes, a signing key) and supervises the Node process.
Keys, the client secret and the provider's grant store live in `state_dir`, so a restarted provider keeps
the sessions and refresh tokens it had handed out.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from aifacility.launcher.supervisor import free_port

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "npm ci --prefix hub/aifacility/oidc"


class OIDCProviderError(RuntimeError):
    """The embedded provider could not be started (missing Node dependencies, port in use, crash)."""


@dataclass(frozen=True)
class DemoUser:
    username: str
    groups: tuple[str, ...] = ()
    password: str = "demo"
    name: str = ""
    email: str = ""

    def as_config(self) -> dict[str, object]:
        return {
            # A stable subject per username, like IAM's UUIDs, so tokens survive a restart of the provider.
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aifacility-demo:{self.username}")),
            "username": self.username,
            "password": self.password,
            "groups": list(self.groups),
            "name": self.name or self.username.capitalize(),
            "email": self.email or f"{self.username}@example.org",
        }


# The accounts of the demo facility (foundation issue): eve is in no facility group and must be refused.
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", ("physics", "ml"), name="Alice Physicist"),
    DemoUser("bob", ("physics",), name="Bob Analyst"),
    DemoUser("dana", ("admins",), name="Dana Admin"),
    DemoUser("eve", (), name="Eve Outsider"),
)


@dataclass
class TokenLifetimes:
    access_token: int = 3600
    id_token: int = 3600
    refresh_token: int = 14 * 86400


@dataclass
class EmbeddedOIDCProvider:
    """A running `oidc-provider` on `http://host:port` (synchronous API: `start()` blocks until it answers).

    `redirect_uris` are the exact callback URLs of the facility's client (the hub's `/hub/oauth_callback`).
    """

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    redirect_uris: list[str] = field(default_factory=list)
    users: tuple[DemoUser, ...] = DEMO_USERS
    access_token_ttl: int = 3600
    id_token_ttl: int = 3600
    refresh_token_ttl: int = 14 * 86400
    client_id: str = "aifacility"
    organisation: str = "aifacility IAM (demo)"
    startup_timeout: float = 30.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if self.port == 0:
            self.port = free_port(self.host)
        for ttl_name in ("access_token_ttl", "id_token_ttl", "refresh_token_ttl"):
            if getattr(self, ttl_name) <= 0:
                raise ValueError(f"{ttl_name} must be a positive number of seconds")

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def client_secret(self) -> str:
        return self._secrets()["client_secret"]

    @property
    def signing_key(self) -> dict[str, str]:
        """The provider's private signing JWK (tests use it to forge tokens a real attacker could not sign)."""
        return self._secrets()["signing_key"]

    @property
    def log_path(self) -> Path:
        return self.state_dir / "provider.log"

    def _secrets(self) -> dict:
        """Client secret, signing key and cookie keys: made once, then kept so a restart changes nothing."""
        path = self.state_dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(key))
        jwk.update({"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})
        data = {"client_secret": secrets.token_urlsafe(32), "signing_key": jwk,
                "cookie_keys": [secrets.token_urlsafe(32)]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.chmod(0o600)
        tmp.replace(path)
        return data

    def _write_config(self) -> Path:
        sec = self._secrets()
        conf = {
            "issuer": self.issuer,
            "host": self.host,
            "port": self.port,
            "state_dir": str(self.state_dir),
            "organisation": self.organisation,
            "client": {"client_id": self.client_id, "client_secret": sec["client_secret"],
                       "redirect_uris": self.redirect_uris},
            "users": [u.as_config() for u in self.users],
            "ttl": {"access_token": self.access_token_ttl, "id_token": self.id_token_ttl,
                    "refresh_token": self.refresh_token_ttl},
            "signing_key": sec["signing_key"],
            "cookie_keys": sec["cookie_keys"],
        }
        path = self.state_dir / "provider.json"
        path.write_text(json.dumps(conf))
        path.chmod(0o600)
        return path

    def start(self) -> EmbeddedOIDCProvider:
        if self._proc and self._proc.poll() is None:
            return self
        if not self.redirect_uris:
            raise ValueError("redirect_uris is empty: give the hub's callback URL, e.g. http://127.0.0.1:8000/hub/oauth_callback")
        node = shutil.which("node")
        if node is None:
            raise OIDCProviderError("Node.js is not installed ('node' is not on PATH); the OIDC provider needs it")
        if not (HERE / "node_modules" / "oidc-provider").is_dir():
            raise OIDCProviderError(f"the provider's Node dependencies are not installed: run `{INSTALL_HINT}`")
        if not _port_is_free(self.host, self.port):
            raise OIDCProviderError(f"cannot start the OIDC provider: {self.host}:{self.port} is already in use")
        config = self._write_config()
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen([node, str(HERE / "provider.mjs"), str(config)], stdout=log,
                                      stderr=subprocess.STDOUT, cwd=HERE, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.issuer}/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise OIDCProviderError(f"the OIDC provider exited with code {self._proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise OIDCProviderError(f"the OIDC provider did not answer on {url} within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> EmbeddedOIDCProvider:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True
