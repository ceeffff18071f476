"""The session's server extension (aifacility_lab) refuses bad input before anything leaves the session: job
names, bodies, notebook paths outside the home, a token the browser tries to send; what it reads from the
session's environment. (Its answers from the real services: tests/e2e/test_lab_extension.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from aifacility_lab.services import FacilityServices, ServiceError, SessionEnvironment


def services(tmp_path: Path, **env: str) -> FacilityServices:
    home = tmp_path / "home"
    (home / "ana").mkdir(parents=True, exist_ok=True)
    base = {"JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_USER": "alice", "HOME": str(home),
            "AIFACILITY_JOBS_API": "http://127.0.0.1:9/services/jobs/api/",
            "AIFACILITY_LIFETIMES_API": "http://127.0.0.1:9/services/lifetimes/api"}
    return FacilityServices(SessionEnvironment.from_environ({**base, **env}), str(home))


async def refusal(call: object) -> tuple[int, str]:
    with pytest.raises(ServiceError) as e:
        await call  # type: ignore[misc]
    return e.value.status, e.value.message


def test_the_environment_the_hub_gives_the_session(tmp_path: Path) -> None:
    env = services(tmp_path, JUPYTERHUB_SERVER_NAME="gpu").env
    assert env.jobs_api == "http://127.0.0.1:9/services/jobs/api" and env.usage_api is None
    assert (env.user, env.server) == ("alice", "gpu")
    assert services(tmp_path)._server_path() == "users/alice/server"
    assert services(tmp_path, JUPYTERHUB_SERVER_NAME="a b")._server_path() == "users/alice/servers/a%20b"


@pytest.mark.parametrize("name", ["../alice-x", "Alice-x", "a/b", "", "-x", "x" * 300, "x?all=1"])
async def test_only_job_names_reach_the_jobs_service(tmp_path: Path, name: str) -> None:
    status, message = await refusal(services(tmp_path).job(name))
    assert status == 400 and "is not a job name" in message


@pytest.mark.parametrize(("body", "words"), [
    ([], "must be a JSON object"),
    ({"command": ["true"], "token": "someone else's"}, "is not yours to send"),
    ({"notebook": "../../etc/x.ipynb"}, "is not in your home directory"),
    ({"notebook": "/../../etc/x.ipynb"}, "is not in your home directory"),
    ({"notebook": 7}, '"notebook" must be the path of a notebook'),
    ({"notebook": ""}, '"notebook" must be the path of a notebook'),
])
async def test_bad_submissions_are_refused_in_the_session(tmp_path: Path, body: object, words: str) -> None:
    status, message = await refusal(services(tmp_path).submit(body))
    assert status == 400 and words in message


def test_notebook_paths_become_paths_in_the_home(tmp_path: Path) -> None:
    s = services(tmp_path)
    assert s.home_relative("ana/fit.ipynb") == "ana/fit.ipynb"
    assert s.home_relative("/ana/./fit.ipynb") == "ana/fit.ipynb"  # JupyterLab's paths are root-relative
    below = FacilityServices(s.env, str(tmp_path / "home" / "ana"))  # a server started in a subdirectory
    assert below.home_relative("fit.ipynb") == "ana/fit.ipynb"


@pytest.mark.parametrize(("body", "words"), [
    ({"hours": "2"}, '"hours" must be a number'), ({"hours": True}, '"hours" must be a number'),
    ({}, 'Send {"hours": N}'), ({"hours": 1, "user": "bob"}, 'Send {"hours": N}'), ([1], 'Send {"hours": N}'),
])
async def test_bad_extensions_are_refused_in_the_session(tmp_path: Path, body: object, words: str) -> None:
    status, message = await refusal(services(tmp_path).extend(body))
    assert status == 400 and words in message


async def test_without_the_session_s_token_nothing_is_asked(tmp_path: Path) -> None:
    status, message = await refusal(services(tmp_path, JUPYTERHUB_API_TOKEN="").job("alice-x"))
    assert status == 503 and "not a JupyterHub session" in message


async def test_an_unreachable_service_is_a_sentence(tmp_path: Path) -> None:
    status, message = await refusal(services(tmp_path).job("alice-x"))  # nothing listens on port 9
    assert status == 502 and "could not be reached" in message and "try again" in message


def test_the_warning_flag_becomes_the_sentence_the_page_shows() -> None:
    from aifacility_lab.services import _with_warning_text

    assert _with_warning_text({"warning": True, "message": "Ends at 13:00 UTC (in 10 min)."})["warning"] == \
        "Ends at 13:00 UTC (in 10 min)."
    assert _with_warning_text({"warning": False, "message": "Ends at 18:00 UTC."})["warning"] is None
