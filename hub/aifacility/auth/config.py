"""`configure(c, facility, ...)`: every traitlet the IAM login and the session tokens need, for the hub config."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from aifacility.auth.authenticator import IAMAuthenticator
from aifacility.facility.model import Facility
from aifacility.hubconfig import add_spawner_args, add_spawner_environment
from aifacility.secrecy import private_file

TEMPLATES = str(Path(__file__).resolve().parent / "templates")
DEFAULT_TOKEN_FILE = "/tmp/aifacility/token"
NOTEBOOK_EXTENSION = "aifacility.notebook"


def load_or_create_crypt_key(path: str | os.PathLike[str]) -> bytes:
    """The key that encrypts `auth_state` in the hub database: made once (demo), then reused across restarts."""
    p = Path(path)
    if p.exists():
        private_file(p)  # one an older version left readable by others becomes the hub's alone
        key = bytes.fromhex(p.read_text().strip())
        if len(key) != 32:
            raise ValueError(f"{p}: the auth_state key must be 32 bytes (64 hex digits)")
        return key
    p.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = private_file(p.with_suffix(".tmp"))  # 0600 before the key is in it
    tmp.write_text(key.hex())
    tmp.replace(p)
    return key


def configure(
    c: Any,
    facility: Facility,
    *,
    issuer: str,
    client_secret: str,
    callback_url: str,
    client_id: str | None = None,
    crypt_key: bytes | None = None,
    token_file: str = DEFAULT_TOKEN_FILE,
    auth_refresh_age: int = 300,
    token_min_lifetime: int | None = None,
    enable_notebook_extension: bool = True,
    validate_server_cert: bool = True,
) -> None:
    """Set the authenticator, its IAM settings from `facility.iam`, templates, and the session-token plumbing.

    - `issuer`: the IAM (or embedded provider) issuer URL; `client_id` defaults to `facility.iam.client_id`.
    - `callback_url`: the hub's `.../hub/oauth_callback` as registered at IAM.
    - `crypt_key`: 32 bytes for `auth_state` encryption; None keeps `JUPYTERHUB_CRYPT_KEY` from the environment.
    - `token_file`: where the notebook keeps the user's access token (default: under the pod's own /tmp);
      `{username}` is replaced (for local process spawners, where sessions share a filesystem). Exported as
      AIFACILITY_TOKEN_FILE and as the WLCG bearer-token-discovery variable BEARER_TOKEN_FILE.
    - `token_min_lifetime`: the hub renews an access token that has fewer seconds than this left (default:
      `facility.iam.token_min_lifetime`).
    """
    iam = facility.iam
    if token_min_lifetime is None:
        token_min_lifetime = iam.token_min_lifetime
    c.JupyterHub.authenticator_class = IAMAuthenticator
    a = c.IAMAuthenticator
    a.issuer = issuer
    a.client_id = client_id or iam.client_id
    a.client_secret = client_secret
    a.oauth_callback_url = callback_url
    a.scope = list(iam.scopes)
    a.username_claim = iam.username_claim
    a.groups_claims = list(iam.groups_claims)
    a.group_prefix = iam.group_prefix
    a.contact = iam.contact
    a.manage_groups = True
    a.allowed_groups = set(iam.allowed_groups)
    a.admin_groups = set(iam.admin_groups)
    a.enable_auth_state = True
    a.refresh_pre_spawn = True
    a.auth_refresh_age = auth_refresh_age
    a.token_min_lifetime = token_min_lifetime
    a.validate_server_cert = validate_server_cert
    if crypt_key is not None:
        c.CryptKeeper.keys = [crypt_key]

    paths = list(c.JupyterHub.template_paths) if "template_paths" in c.JupyterHub else []
    if TEMPLATES not in paths:
        c.JupyterHub.template_paths = [TEMPLATES, *paths]

    def token_path(spawner: Any) -> str:
        return token_file.replace("{username}", spawner.user.name)

    # No token in the environment of the pod spec: the notebook extension fetches it from the hub at start and
    # sets ACCESS_TOKEN in the server's own environment (inherited by kernels and terminals).
    add_spawner_environment(c, {"AIFACILITY_TOKEN_FILE": token_path, "BEARER_TOKEN_FILE": token_path,
                                "AIFACILITY_TOKEN_REFRESH_MARGIN": str(token_min_lifetime)})
    if enable_notebook_extension:
        add_spawner_args(c, [f"--ServerApp.jpserver_extensions={NOTEBOOK_EXTENSION}=True"])


def session_token_volume(token_file: str = DEFAULT_TOKEN_FILE) -> dict[str, Any]:
    """KubeSpawner settings for a pod-private, memory-backed directory holding the token file (optional).

    The default token path is under the pod's own /tmp, which works without any volume; mounting this emptyDir
    there keeps the token off the node's disk. Use as `c.KubeSpawner.volumes += v["volumes"]` and
    `c.KubeSpawner.volume_mounts += v["volume_mounts"]`.
    """
    directory = str(Path(token_file).parent)
    return {
        "volumes": [{"name": "aifacility-token", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        "volume_mounts": [{"name": "aifacility-token", "mountPath": directory}],
    }
