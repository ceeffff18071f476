"""`aifacility jobs submit` turns its command line into the service's request (the client is replaced)."""

from __future__ import annotations

from typing import Any

import pytest

from aifacility import cli
from aifacility.jobs import cli as jobs_cli


class FakeClient:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def __init__(self) -> None:
        pass

    def submit(self, command: Any, **kw: Any) -> dict[str, Any]:
        self.calls.append((command, kw))
        return {"name": "alice-abc123", "phase": "Queued", "queue": "ml", "position": None, "waiting_for": None}


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    FakeClient.calls = []
    monkeypatch.setattr(jobs_cli, "JobsClient", FakeClient)
    return FakeClient.calls


def test_a_command_after_the_double_dash(submitted: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["jobs", "submit", "--group", "ml", "--mig", "1g.10gb:2", "--time", "1.5", "--",
                     "python", "train.py", "--epochs", "3"]) == 0
    [(command, kw)] = submitted
    assert command == ["python", "train.py", "--epochs", "3"]
    assert (kw["group"], kw["mig"], kw["hours"], kw["notebook"]) == ("ml", "1g.10gb:2", 1.5, None)
    assert capsys.readouterr().out == "alice-abc123\n"


def test_a_notebook_with_typed_parameters(submitted: list[Any]) -> None:
    assert cli.main(["jobs", "submit", "--group", "ml", "fit.ipynb", "-p", "alpha", "0.5", "-p", "label", "run 2",
                     "-p", "n", "3", "--json"]) == 0
    [(command, kw)] = submitted
    assert command is None and kw["notebook"] == "fit.ipynb"
    assert kw["parameters"] == {"alpha": 0.5, "label": "run 2", "n": 3}


@pytest.mark.parametrize(("argv", "words"), [
    (["jobs", "submit", "--group", "ml"], "Give the command to run"),
    (["jobs", "submit", "--", "python", "-p", "x", "1"], None),  # a command's own -p is its business
    (["jobs", "submit", "-p", "x", "1", "--", "python", "run.py"], "-p NAME VALUE is for notebook jobs"),
    (["jobs", "submit", "nb.ipynb", "--gpu", "t4"], "only -p NAME VALUE, --wait and --json may follow"),
])
def test_command_line_mistakes(submitted: list[Any], capsys: pytest.CaptureFixture[str], argv: list[str],
                               words: str | None) -> None:
    rc = cli.main(argv)
    if words is None:
        assert rc == 0 and submitted[0][0] == ["python", "-p", "x", "1"]
    else:
        assert rc == 2 and words in capsys.readouterr().err and not submitted
