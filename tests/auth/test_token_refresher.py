"""The notebook-side token refresher: configuration from the environment, atomic private writes, timing."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from aifacility.notebook.token_refresher import ENV_TOKEN, FreshToken, TokenRefresher


def test_off_without_its_environment() -> None:
    assert TokenRefresher.from_env({"JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api"}) is None


def test_from_env(tmp_path: Path) -> None:
    r = TokenRefresher.from_env({"JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api/", "JUPYTERHUB_API_TOKEN": "t",
                                 "AIFACILITY_TOKEN_FILE": str(tmp_path / "t"), "AIFACILITY_TOKEN_REFRESH_MARGIN": "30"})
    assert r is not None and r.hub_api_url == "http://127.0.0.1:1/hub/api" and r.margin == 30


def test_write_is_private_and_sets_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    r = TokenRefresher("http://127.0.0.1:1/hub/api", "t", tmp_path / "run" / "token")
    r.write(FreshToken("abc", None))
    r.write(FreshToken("def", None))
    assert (tmp_path / "run" / "token").read_text() == "def\n"
    assert stat.S_IMODE(os.stat(tmp_path / "run" / "token").st_mode) == 0o600
    assert os.listdir(tmp_path / "run") == ["token"]  # no temporary file left behind
    assert os.environ[ENV_TOKEN] == "def"


def test_unwritable_location_is_an_oserror_not_a_crash_of_the_writer(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    r = TokenRefresher("http://127.0.0.1:1/hub/api", "t", tmp_path / "file" / "token")
    with pytest.raises(OSError):
        r.write(FreshToken("abc", None))


def test_asks_again_at_half_life_and_before_the_hub_margin() -> None:
    r = TokenRefresher("http://127.0.0.1:1/hub/api", "t", Path("/nonexistent"), margin=120)
    now = time.time()
    assert 1790 < r.next_delay(FreshToken("x", now + 3600)) <= 1800
    assert 30 < r.next_delay(FreshToken("x", now + 100)) <= 40  # left - margin/2
    assert r.next_delay(FreshToken("x", now - 5)) == r.min_interval
    assert r.next_delay(FreshToken("x", None)) == 300


async def test_unreachable_hub_is_a_readable_error(tmp_path: Path) -> None:
    from auth_harness import free_port

    from aifacility.notebook.token_refresher import TokenFetchError

    r = TokenRefresher(f"http://127.0.0.1:{free_port()}/hub/api", "t", tmp_path / "token")
    with pytest.raises(TokenFetchError, match="cannot be reached"):
        await r.fetch()
