"""`aifacility up --demo-users FILE`: more demo accounts for the embedded OIDC provider.

Organisers rehearse a school with as many accounts as it has students, and load tests need many users that
really logged in through IAM (the hub refuses spawns for users without IAM tokens). The file is a YAML list of
`{username, groups}`; every account's password is `demo`, and like the built-in demo accounts they exist only
while the facility listens on loopback.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from aifacility.oidc.launcher import DEMO_USERS, DemoUser

# JupyterHub user names end up in pod names, claim names and URLs: keep them DNS-label-like.
USERNAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"


class DemoUsersError(ValueError):
    """The demo users file cannot be used; the message is one line naming the file and the entry."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=USERNAME_PATTERN)
    groups: list[str] = Field(default_factory=list)


_ENTRIES = TypeAdapter(list[_Entry])


def load_demo_users(path: Path) -> tuple[DemoUser, ...]:
    """The accounts listed in `path`, checked: a YAML list, known keys only, valid and unique user names that
    do not clash with the built-in demo accounts."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise DemoUsersError(f"cannot read the demo users file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DemoUsersError(f"{path} is not valid YAML{where}") from None
    if not isinstance(data, list):
        raise DemoUsersError(f"{path} must be a YAML list of {{username, groups}} entries, "
                             f"e.g. '- {{username: student01, groups: [ml]}}'")
    try:
        entries = _ENTRIES.validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"]
        where = f"entry {int(loc[0]) + 1}" if loc and isinstance(loc[0], int) else "an entry"
        key = ".".join(str(p) for p in loc[1:]) or "the entry"
        raise DemoUsersError(f"{path}: {where}, {key}: {_reason(err['type'], err['msg'])}") from None
    taken = {u.username for u in DEMO_USERS}
    seen: set[str] = set()
    for i, entry in enumerate(entries, 1):
        if entry.username in taken:
            raise DemoUsersError(f"{path}: entry {i}: '{entry.username}' is a built-in demo account; "
                                 "choose another user name")
        if entry.username in seen:
            raise DemoUsersError(f"{path}: entry {i}: user name '{entry.username}' is listed twice")
        seen.add(entry.username)
    return tuple(DemoUser(e.username, tuple(e.groups)) for e in entries)


def _reason(kind: str, msg: str) -> str:
    if kind == "string_pattern_mismatch":
        return ("must be lower-case letters, digits, '.', '_' or '-', start and end with a letter or digit, "
                "at most 63 characters")
    if kind == "missing":
        return "is missing"
    if kind == "extra_forbidden":
        return "is not a known key (an entry has 'username' and 'groups')"
    if kind == "model_type":
        return "must be a mapping like {username: student01, groups: [ml]}"
    return msg
