"""Usernames from IAM's `preferred_username`, made valid for Kubernetes objects and POSIX accounts.

A notebook pod, its PVC and its POSIX account (uid on the shared filesystem) are all named after the hub user,
so the name must be a DNS-1123 label *and* a portable POSIX login: lower-case letters, digits and '-', starting
with a letter, at most 32 characters (the `useradd` limit). Two IAM accounts whose names normalise to the
same string must not share one hub user: the authenticator refuses the second one (see `IAMAuthenticator`).
"""

from __future__ import annotations

import re
import unicodedata

MAX_LENGTH = 32
VALID = re.compile(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")


class InvalidUsername(ValueError):
    """The IAM username cannot be turned into a valid facility username."""


def normalize_username(raw: str) -> str:
    """`Alice.Smith@cern` -> `alice-smith-cern`; raise `InvalidUsername` when nothing usable is left."""
    # Fold accents (e.g. 'José' -> 'jose') before dropping what is not ASCII.
    text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    if text and not text[0].isalpha():
        text = f"u-{text}"
    text = text[:MAX_LENGTH].rstrip("-")
    if not VALID.match(text):
        raise InvalidUsername(f"the IAM username {raw!r} has no letters or digits to build a facility username from")
    return text


def is_valid_username(name: str) -> bool:
    return VALID.match(name) is not None


def normalize_group(raw: str, strip_prefix: str = "/") -> str:
    """IAM group names: `/physics` (wlcg.groups) and `physics` (groups) are the same hub group."""
    return raw[len(strip_prefix):] if strip_prefix and raw.startswith(strip_prefix) else raw
