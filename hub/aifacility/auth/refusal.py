"""Why a login was refused: what the refusal page shows (never a token)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Refusal:
    reason: str  # "groups" | "collision" | "username"
    username: str = ""
    iam_username: str = ""
    groups: list[str] = field(default_factory=list)
    detail: str = ""
