"""Login with INDIGO IAM (OIDC), tokens in the session, and the hub's session token API."""

from aifacility.auth.authenticator import IAMAuthenticator
from aifacility.auth.config import configure, load_or_create_crypt_key, session_token_volume
from aifacility.auth.discovery import IdPError, OIDCDiscovery
from aifacility.auth.jobs import job_token_secret, read_session_token
from aifacility.auth.names import InvalidUsername, normalize_username

__all__ = ["IAMAuthenticator", "IdPError", "InvalidUsername", "OIDCDiscovery", "configure", "job_token_secret",
           "load_or_create_crypt_key", "normalize_username", "read_session_token", "session_token_volume"]
