"""The hub's managed services start inside JupyterHub's window (ten one-second tries, then the hub stops): they
leave out two optional imports of their libraries that cost seconds on a busy machine (see aifacility/__init__)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SLOW = ("kubernetes_validate", "rfc3987_syntax")
CHECK = "import sys, {module}; print(sorted(m for m in {slow} if sys.modules.get(m) is not None))"


@pytest.mark.parametrize("service", ["lifetimes", "jobs", "admin", "accounting"])
def test_a_managed_service_goes_without_the_slow_optional_imports(service: str) -> None:
    code = CHECK.format(module=f"aifacility.{service}.service.__main__", slow=SLOW)
    env = {**os.environ, "JUPYTERHUB_SERVICE_NAME": service}  # what JupyterHub sets for its managed services
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_other_processes_import_as_usual() -> None:
    """The deployment tests and the CLI still have kubernetes-validate and jsonschema's format checkers."""
    code = "import aifacility, kubernetes_validate, rfc3987_syntax; print('ok')"
    env = {k: v for k, v in os.environ.items() if k != "JUPYTERHUB_SERVICE_NAME"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
