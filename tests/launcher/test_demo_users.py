"""`aifacility up --demo-users FILE`: more demo accounts for rehearsals, and one clear line for a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifacility.launcher.demo_users import DemoUsersError, load_demo_users


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "students.yaml"
    p.write_text(text)
    return p


def test_accounts_with_groups(tmp_path: Path) -> None:
    users = load_demo_users(write(tmp_path, "- {username: student01, groups: [ml]}\n- {username: student02}\n"))
    assert [(u.username, u.groups, u.password) for u in users] == [
        ("student01", ("ml",), "demo"), ("student02", (), "demo")]


@pytest.mark.parametrize(("text", "expected"), [
    ("- {username: Student_1}\n", "username"),
    ("username: x\n", "list"),
    ("- {username: alice}\n", "alice"),
    ("- {username: s1, colour: red}\n", "colour"),
    ("- [\n", "YAML"),
])
def test_bad_files_get_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DemoUsersError) as err:
        load_demo_users(path)
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DemoUsersError, match=r"absent\.yaml"):
        load_demo_users(tmp_path / "absent.yaml")
