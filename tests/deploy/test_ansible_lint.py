"""ansible-lint, production profile, offline, on the aifacility.platform collection: no rule skipped, no finding.

ansible-lint's syntax check resolves the playbook's `aifacility.platform.*` roles through the collection as built
and installed by conftest.py's `collections_path` fixture (with the community collections beside it), so nothing
is fetched. ansible/.ansible-lint names the profile and excludes only the fetched kubeconfig directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from deploy_support import ANSIBLE

LINT = Path(sys.executable).parent / "ansible-lint"


def _lint(collections_path: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path, "NO_COLOR": "1"}
    return subprocess.run([str(LINT), "--offline", "--profile", "production", "--nocolor"],
                          capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_the_collection_passes_ansible_lint_production(collections_path: str) -> None:
    config = yaml.safe_load((ANSIBLE / ".ansible-lint").read_text())
    assert not {"skip_list", "warn_list", "enable_list"} & set(config), "rules are fixed, not skipped"
    proc = _lint(collections_path, ANSIBLE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Passed: 0 failure(s), 0 warning(s)" in out and "Profile 'production' was required, and it passed" in out
    # Every role and the playbook were linted, not skipped for a broken environment.
    assert "violation(s)" not in out and "syntax-check" not in out


BAD_TASKS = """\
- shell: echo hello
- name: install something
  apt: name=curl
"""


def test_ansible_lint_fails_on_a_bad_role(collections_path: str, tmp_path: Path) -> None:
    role = tmp_path / "roles" / "bad" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text(BAD_TASKS)
    proc = _lint(collections_path, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for rule in ("fqcn[action-core]", "name[missing]", "no-changed-when", "name[casing]", "no-free-form"):
        assert rule in out, f"{rule} not reported:\n{out}"
