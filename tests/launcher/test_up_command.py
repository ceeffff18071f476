"""`aifacility up` refuses bad input with one clear line and starts nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from aifacility.launcher.supervisor import free_port


def up(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aifacility.cli", "up", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_wrong_facility_file_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "facility.yaml"
    bad.write_text("apiVersion: aifacility/v1\nkind: Facility\nname: x\nimages: []\nprofiles: []\n")
    r = up("--facility", str(bad), "--state-dir", str(tmp_path / "s"), "--port", str(free_port()))
    assert r.returncode == 2
    assert f"{bad}: images: List should have at least 1 item" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "s").exists()


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = up("--state-dir", str(tmp_path / "s"), "--port", str(port))
    assert r.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert "--port" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_demo_accounts_only_on_loopback(tmp_path: Path) -> None:
    r = up("--state-dir", str(tmp_path / "s"), "--port", str(free_port()), "--host", "0.0.0.0")
    assert r.returncode == 2
    assert "only while the hub listens on loopback" in r.stderr
