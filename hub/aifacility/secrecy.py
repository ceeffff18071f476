"""Secrets at rest and in logs: files that hold secrets are the hub user's alone (0600), and session identifiers
never reach a log.

- `private_file(path)` creates a file 0600 (or narrows an existing one, which migrates older state directories);
  sqlite gives the journal and WAL files it creates next to a database the database's own mode, so a database
  made private before its first connection stays private. The hub's database and cookie secret, and our own
  sqlite stores (quotas, lifetimes), hold API tokens' hashes, OAuth state and the cookie-signing key.
- `SessionIdFilter` rewrites log records that carry a `jupyterhub-session-id` (the cookie that identifies a
  browser's hub session; the hub ties OAuth tokens to it, and its services log it in their auth cache keys).
- `configure(c)` is the hub's part: its database file, its cookie secret and its log handlers.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

PRIVATE = 0o600
REDACTED = "[redacted]"
LOG_FILTER = "aifacility-session-ids"

# jupyterhub-session-id=<v>, "jupyterhub-session-id": "<v>", session_id='<v>', session_id=<v>; JupyterHub's (and
# jupyter_server's) "Setting new xsrf cookie for b'<session id>:<user or anonymous id>'"; and HubAuth's cache keys
# "token:<session id>:<sha256>" / "cookie:<session id>:<sha256>".
_SESSION_PATTERNS = (
    re.compile(r"(?i)(jupyterhub-session-id['\"]?\s*[=:]\s*['\"]?)([^\s;,'\"&]+)()"),
    re.compile(r"(?i)(session[_-]id['\"]?\s*[=:]\s*['\"]?)([0-9a-f]{16,})()"),
    re.compile(r"(?i)(xsrf cookie for b?['\"]?)([0-9a-f]{16,})(:)"),
    re.compile(r"((?:token|cookie):)([0-9a-f]{32})(:[0-9a-f]{64})"),
)


def redact_session_ids(text: str) -> str:
    """`text` with every session identifier it shows replaced by [redacted]."""
    for pattern in _SESSION_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    return text


class SessionIdFilter(logging.Filter):
    """A log filter (for handlers: it then sees the records of every logger they serve) that redacts session
    identifiers from the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: leave it to the handler's own error path
            return True
        redacted = redact_session_ids(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add a SessionIdFilter to every handler of `logger` (default: the root logger), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, SessionIdFilter) for f in handler.filters):
            handler.addFilter(SessionIdFilter())


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make `path` a file only its owner may read and write: created empty with mode 0600 when missing (with its
    directory), narrowed to 0600 when it exists with a wider mode."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, PRIVATE)
    finally:
        os.close(fd)
    return p


def private_sqlite(path: str | os.PathLike[str]) -> Path:
    """`private_file` for a sqlite database and the journal and WAL files a crash may have left beside it."""
    p = private_file(path)
    for suffix in ("-journal", "-wal", "-shm"):
        side = p.with_name(p.name + suffix)
        if side.exists():
            private_file(side)
    return p


def sqlite_path(db_url: str) -> Path | None:
    """The file of a `sqlite:///...` SQLAlchemy URL; None for other databases and in-memory sqlite."""
    match = re.match(r"sqlite:///(.+)$", db_url)
    if not match or match.group(1) in (":memory:", ""):
        return None
    return Path(match.group(1).split("?", 1)[0])


def configure(c: Any) -> None:
    """The hub's secrets at rest and in its log: its sqlite database (`c.JupyterHub.db_url`, default
    jupyterhub.sqlite in the working directory) and cookie secret file made 0600 before the hub opens them, and
    session identifiers redacted from every record its log handlers write. Call it after db_url and
    cookie_secret_file are set."""
    hub = c.JupyterHub
    db_url = hub.db_url if "db_url" in hub else "sqlite:///jupyterhub.sqlite"
    db = sqlite_path(str(db_url))
    if db is not None:
        private_sqlite(db)
    secret = Path(str(hub.cookie_secret_file if "cookie_secret_file" in hub else "jupyterhub_cookie_secret"))
    if secret.exists():
        private_file(secret)  # JupyterHub writes a new one 0600 itself, and refuses to read one others may read
    # The hub logs through its application's console handler (traitlets' logging_config, merged into the
    # default one), and tornado's and oauthlib's loggers reach it too: a filter on that handler sees them all.
    logging_config = dict(hub.logging_config) if "logging_config" in hub else {}
    filters = {**logging_config.get("filters", {}), LOG_FILTER: {"()": f"{__name__}.SessionIdFilter"}}
    handlers = dict(logging_config.get("handlers", {}))
    for name in {"console", *handlers}:
        handler = dict(handlers.get(name, {}))
        handler["filters"] = [*(f for f in handler.get("filters", []) if f != LOG_FILTER), LOG_FILTER]
        handlers[name] = handler
    hub.logging_config = {**logging_config, "filters": filters, "handlers": handlers}
