"""The server-token record (aifacility.spawner.tokens) against JupyterHub's own token table (its ORM on an
in-memory sqlite): what a stop revokes, after a hub restart too, and what happens to the token a lost queued
spawn kept when its spawn resumes, takes the pod over, replaces it, or fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from jupyterhub import orm

from aifacility.spawner.tokens import STATE_KEY, ServerTokenMixin


@dataclass
class HubUser:
    """What the mixin reads of jupyterhub.user.User: the hub's session, the user's row, the name."""

    db: Any
    orm_user: Any
    name: str


class ProcessSpawner:
    """A spawner's life cycle as JupyterHub drives it; `take_over` is the token a start ends up running with
    (a resumed spawn adopting its lost pod's), `fail` makes the start fail."""

    take_over: str | None = None
    fail = False

    def __init__(self, user: HubUser) -> None:
        self.user = user
        self.api_token = ""
        self.orm_spawner = None
        self.log = logging.getLogger("test")

    def start(self) -> Any:
        async def go() -> str:
            if self.take_over:
                self.api_token = self.take_over
            if self.fail:
                raise RuntimeError("the pod did not start")
            return "http://127.0.0.1:8888"
        return go()

    def get_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def clear_state(self) -> None:
        self.api_token = ""

    def run_post_stop_hook(self) -> None:
        return None


class Spawner(ServerTokenMixin, ProcessSpawner):
    keep = False

    def keeps_server_token(self) -> bool:
        return self.keep


@pytest.fixture
def user() -> Iterator[HubUser]:
    db = orm.new_session_factory("sqlite://")()
    db.add(orm.OAuthClient(identifier="jupyterhub"))  # the hub's own client, which its API tokens belong to
    orm_user = orm.User(name="alice")
    db.add(orm_user)
    db.commit()
    yield HubUser(db, orm_user, "alice")
    db.close()


def server_token(user: HubUser) -> str:
    """A fresh token as User.spawn makes one for a server."""
    return str(user.orm_user.new_api_token(note="Server at /user/alice/"))


def valid(user: HubUser, token: str) -> bool:
    return orm.APIToken.find(user.db, token) is not None


def spawn(spawner: Spawner, token: str) -> str:
    """What User.spawn does: a fresh token, then start()."""
    spawner.api_token = token
    return str(asyncio.run(spawner.start()))


def stop(spawner: Spawner) -> None:
    """What User.stop does after the spawner's own stop: JupyterHub deletes the token it knows, then the
    post-stop hook, then it clears and saves the state."""
    found = orm.APIToken.find(spawner.user.db, spawner.api_token) if spawner.api_token else None
    if found is not None:
        spawner.user.db.delete(found)
        spawner.user.db.commit()
    spawner.run_post_stop_hook()
    spawner.clear_state()


def test_the_token_is_recorded_and_revoked_at_the_stop(user: HubUser) -> None:
    s = Spawner(user)
    token = server_token(user)
    spawn(s, token)
    assert s.get_state()[STATE_KEY] == orm.APIToken.find(user.db, token).hashed
    stop(s)
    assert not valid(user, token)
    assert STATE_KEY not in s.get_state()


def test_after_a_hub_restart_the_state_says_what_to_revoke(user: HubUser) -> None:
    before = Spawner(user)
    token = server_token(user)
    spawn(before, token)
    state = before.get_state()
    after = Spawner(user)  # the restarted hub's spawner knows no token in memory
    after.load_state(state)
    stop(after)
    assert not valid(user, token)


def test_a_kept_token_taken_over_by_the_resumed_spawn_stays(user: HubUser) -> None:
    s = Spawner(user)
    lost = server_token(user)
    spawn(s, lost)
    s.keep = True  # found queued after a restart: the pod waits with its token
    s.api_token = ""
    stop(s)
    assert valid(user, lost)
    s.keep = False
    s.take_over = lost
    spawn(s, server_token(user))  # JupyterHub then deletes the unused fresh token itself
    assert valid(user, lost)
    assert s.get_state()[STATE_KEY] == orm.APIToken.find(user.db, lost).hashed


def test_a_kept_token_the_new_server_does_not_use_is_revoked(user: HubUser) -> None:
    s = Spawner(user)
    lost = server_token(user)
    spawn(s, lost)
    s.keep, s.api_token = True, ""
    stop(s)
    s.keep = False
    fresh = server_token(user)
    spawn(s, fresh)  # the options changed: the lost pod was replaced
    assert not valid(user, lost) and valid(user, fresh)


def test_a_failed_start_revokes_the_kept_token_too(user: HubUser) -> None:
    s = Spawner(user)
    lost = server_token(user)
    spawn(s, lost)
    s.keep, s.api_token = True, ""
    stop(s)
    s.keep, s.fail = False, True
    fresh = server_token(user)
    with pytest.raises(RuntimeError):
        spawn(s, fresh)
    stop(s)
    assert not valid(user, lost) and not valid(user, fresh)


def test_another_users_token_is_never_touched(user: HubUser) -> None:
    other = orm.User(name="bob")
    user.db.add(other)
    user.db.commit()
    bobs = str(other.new_api_token(note="Server at /user/bob/"))
    s = Spawner(user)
    s.load_state({STATE_KEY: orm.APIToken.find(user.db, bobs).hashed})
    stop(s)
    assert valid(user, bobs)
