"""The notebook server's extension takes tornado's loggers back from `distributed` (imported by dask-labextension
when the server looks for extensions), so that the hub authentication's messages reach the server's log, through
its handlers and their session-id filter."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import io, logging
server_log = logging.getLogger("ServerApp")
out = io.StringIO()
server_log.addHandler(logging.StreamHandler(out))
server_log.setLevel(logging.INFO)
server_log.propagate = False
logging.getLogger("tornado").parent = server_log     # jupyter_server's own setup
import distributed  # noqa: F401  (what dask-labextension's import does)
assert logging.getLogger("tornado.application").getEffectiveLevel() == logging.ERROR
from aifacility.notebook import _load_jupyter_server_extension
class App:
    log = server_log
_load_jupyter_server_extension(App())
from tornado.log import app_log
app_log.info("Setting new xsrf cookie for b'0123456789abcdef0123456789abcdef:abc'")
print(out.getvalue(), end="")
"""


def test_tornado_messages_reach_the_server_log_redacted() -> None:
    # without the hub's variables the extension's token refresher stays off
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "AIFACILITY_"))}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "Setting new xsrf cookie for b'[redacted]:abc'" in out.stdout, out.stdout + out.stderr
    assert "0123456789abcdef" not in out.stdout + out.stderr

