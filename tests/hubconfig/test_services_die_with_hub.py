"""A hub-managed service dies with the hub that started it, even when the hub is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

# A stand-in hub: starts a "service" in a session of its own, as JupyterHub does, prints its pid and waits.
HUB = textwrap.dedent("""
    import subprocess, sys, time
    service = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True)
    print(service.pid, flush=True)
    time.sleep(600)
""")
SERVICE = "from aifacility.hubservice import die_with_hub; import time; die_with_hub(); time.sleep(600)"
UNTIED = "import time; time.sleep(600)"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start(service: str) -> tuple[subprocess.Popen[str], int]:
    hub = subprocess.Popen([sys.executable, "-c", HUB, service], stdout=subprocess.PIPE, text=True)
    assert hub.stdout is not None
    return hub, int(hub.stdout.readline())


def _gone_within(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_service_ends_when_its_hub_is_killed() -> None:
    hub, service = _start(SERVICE)
    time.sleep(1.0)  # the service has armed its signal
    assert _alive(service)
    hub.kill()
    hub.wait()
    assert _gone_within(service, 10), "the service outlived its hub"


def test_without_it_the_service_is_orphaned() -> None:
    """What the tie prevents: the same service without it keeps running, parented by init."""
    hub, service = _start(UNTIED)
    try:
        time.sleep(0.5)
        hub.kill()
        hub.wait()
        assert not _gone_within(service, 1.5)
    finally:
        os.kill(service, signal.SIGKILL)


def test_a_service_whose_hub_lives_goes_on() -> None:
    out = subprocess.run([sys.executable, "-c", "from aifacility.hubservice import die_with_hub; die_with_hub(); "
                          "print('armed')"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "armed", out.stderr
