"""Paths and pinned tool versions shared by the deployment tests (a uniquely named module: every test area
has its own conftest.py, so `from conftest import ...` could pick up another area's)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aifacility"
ANSIBLE = REPO / "ansible"
# CI runs on a fresh clone with the shared/ folder beside the repository.
SHARED = REPO.parent / "shared"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aifacility"

ANSIBLE_BUNDLE = "ansible==12.3.0"  # the newest community package for Python 3.11
BUNDLED_COLLECTIONS = ("openstack/cloud", "kubernetes/core", "ansible/posix", "community/general")
VENV_BIN = Path(sys.executable).parent
