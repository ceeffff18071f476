"""Chart.lock of charts/aifacility, written by helm itself without reaching the subcharts' repositories.

`helm dependency update` writes the lock from the repositories' index files; their digest covers only
Chart.yaml's dependencies and the versions resolved. This machine cannot reach hub.jupyter.org, helm.dask.org or
the interLink chart's site, so the index files are given to helm from a local cache (`--skip-refresh`) naming
each pinned version, and the chart archives helm then downloads come from a loopback server (stand-ins holding
only a Chart.yaml: they are thrown away, never committed). Where the repositories are reachable,
`helm dependency update charts/aifacility` gives the same lock.

    .venv/bin/python tests/deploy/chart_lock.py --write
"""

from __future__ import annotations

import http.server
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))
from aifacility.embedded.controlplane.kueue_manager import CHART, helm_binary


def _stand_in(name: str, version: str) -> bytes:
    meta = yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{name}/Chart.yaml")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return buf.getvalue()


def _quiet_handler(directory: Path) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def render_lock(helm: str | None = None) -> str:
    """The Chart.lock helm writes for the chart's current Chart.yaml."""
    helm = helm or helm_binary()
    deps = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "www").mkdir()
        for d in deps:
            (root / "www" / f"{d['name']}-{d['version']}.tgz").write_bytes(_stand_in(d["name"], d["version"]))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(root / "www"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            cache = root / "cache"
            cache.mkdir()
            repos = []
            for i, d in enumerate(deps):
                name = f"repo{i}"
                repos.append({"name": name, "url": d["repository"]})
                index = {"apiVersion": "v1", "entries": {d["name"]: [{
                    "apiVersion": "v2", "name": d["name"], "version": d["version"],
                    "urls": [f"{base}/{d['name']}-{d['version']}.tgz"]}]}}
                (cache / f"{name}-index.yaml").write_text(yaml.safe_dump(index))
            config = root / "repositories.yaml"
            config.write_text(yaml.safe_dump({"apiVersion": "", "repositories": repos}))
            chart = root / "aifacility"
            shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
            proc = subprocess.run([helm, "dependency", "update", "--skip-refresh", str(chart),
                                   "--repository-config", str(config), "--repository-cache", str(cache)],
                                  capture_output=True, text=True, timeout=120)
        finally:
            server.shutdown()
        if proc.returncode != 0:
            raise RuntimeError(f"helm dependency update failed: {proc.stderr.strip()}")
        lock = yaml.safe_load((chart / "Chart.lock").read_text())
    # `generated` is when helm ran; keep the committed file's so that an unchanged lock stays byte-identical.
    current = CHART / "Chart.lock"
    if current.exists():
        old = yaml.safe_load(current.read_text())
        if old.get("digest") == lock["digest"]:
            lock["generated"] = old["generated"]
    return yaml.safe_dump(lock, sort_keys=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        (CHART / "Chart.lock").write_text(render_lock())
        print(f"wrote {CHART / 'Chart.lock'}")
    else:
        sys.stdout.write(render_lock())
