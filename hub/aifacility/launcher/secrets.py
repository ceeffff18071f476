"""Secrets the embedded facility generates once and keeps in its state directory (mode 0600)."""

from __future__ import annotations

import secrets
from pathlib import Path


def persistent_secret(state_dir: Path, name: str, nbytes: int = 32) -> str:
    """Return the secret `name`, creating it on first use so that restarts keep sessions and encrypted state."""
    d = state_dir / "secrets"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / name
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(nbytes))
    return path.read_text().strip()
