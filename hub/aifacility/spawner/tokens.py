"""The API token of a notebook server: remembered with the server's state, revoked when the server ends.

JupyterHub creates a server's API token at each spawn and deletes it when the server stops, but it knows the
token only in the hub process's memory: after a hub restart (on Kubernetes the pods outlive it) the server still
works with its token, and the stop that follows cannot find it, so the token stays valid in the database for as
long as anyone holds a copy (an orphan pod, a leaked environment). The mixin here records which row of the hub's
token table is the server's (its `hashed` column, unique, and no secret beyond what that table holds) in the
spawner's state, which JupyterHub keeps in its database, and deletes that row when the server stops. A spawn
that a hub restart lost and that resumes keeps its token (see resume.py), so a spawner can say so through
`keeps_server_token`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyterhub import orm

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner as _SpawnerBase
else:
    _SpawnerBase = object  # JupyterHub refuses Spawner subclasses that do not define start, stop and poll

STATE_KEY = "aifacility_server_token"


class ServerTokenMixin(_SpawnerBase):
    """Mix in before the spawner class (`class S(ServerTokenMixin, KubeSpawner)`)."""

    _server_token_hashed: str | None = None
    # Tokens of earlier instances of this server that a stop kept (keeps_server_token) and that the current start
    # has not taken over yet: revoked once it is clear they are not the server's (the start ended either way).
    _kept_tokens: frozenset[str] = frozenset()

    def _hub_db(self) -> Any:
        return getattr(self.user, "db", None)

    def _current_token_hashed(self) -> str | None:
        db = self._hub_db()
        if db is None or not self.api_token:
            return None
        found = orm.APIToken.find(db, self.api_token)
        return str(found.hashed) if found is not None else None

    def record_server_token(self) -> None:
        """Remember the row of the token the server runs with, in the state JupyterHub saves."""
        hashed = self._current_token_hashed()
        if hashed:
            self._server_token_hashed = hashed

    def keeps_server_token(self) -> bool:
        """Whether the stop now under way leaves the token valid (a lost spawn that will resume with it)."""
        return False

    def _revoke(self, hashed: str) -> bool:
        db = self._hub_db()
        orm_user = getattr(self.user, "orm_user", None)
        if db is None or orm_user is None:
            return False
        found = db.query(orm.APIToken).filter_by(hashed=hashed, user_id=orm_user.id).first()
        if found is None:
            return False
        self.log.info("Revoking the API token of %s's ended server (token %s)", self.user.name, found.api_id)
        db.delete(found)
        db.commit()
        return True

    def revoke_server_token(self) -> bool:
        """Delete the recorded token of this server (and kept ones of its earlier instances) from the hub's
        database; whether there was one to delete."""
        hashed, self._server_token_hashed = self._server_token_hashed, None
        kept, self._kept_tokens = self._kept_tokens, frozenset()
        return any([self._revoke(h) for h in {*kept, *([hashed] if hashed else [])}])

    def revoke_kept_tokens(self) -> None:
        """After a start: the kept tokens the server did not take over are no one's any more."""
        kept, self._kept_tokens = self._kept_tokens, frozenset()
        for hashed in kept - {self._server_token_hashed}:
            self._revoke(hashed)

    def start(self) -> Any:
        # The fresh token exists now: record it in the database at once (JupyterHub commits right after start()
        # is called), so that a hub that dies during the spawn still knows, after its restart, what to revoke.
        previous = self._server_token_hashed
        self.record_server_token()
        if previous and previous != self._server_token_hashed:
            self._kept_tokens = self._kept_tokens | {previous}
        if self._server_token_hashed and self.orm_spawner is not None:
            self.orm_spawner.state = self.get_state()
        return self._started(super().start())

    async def _started(self, starting: Any) -> Any:
        url = await starting
        self.record_server_token()  # a start that took over a lost spawn's pod runs with that pod's token
        self.revoke_kept_tokens()
        return url

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        self.record_server_token()
        if self._server_token_hashed:
            state[STATE_KEY] = self._server_token_hashed
        return state

    # clear_state keeps the record: spawners clear their state as soon as they see their server gone (in poll or
    # stop, before JupyterHub calls the post-stop hook), and the record is what that hook revokes. Revoking
    # forgets it; a new start records the new token over it.

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        hashed = state.get(STATE_KEY)
        if isinstance(hashed, str) and hashed:
            self._server_token_hashed = hashed

    def run_post_stop_hook(self) -> Any:
        # Every end of a server passes here (JupyterHub calls it even when poll() found the server gone).
        if not self.keeps_server_token():
            self.revoke_server_token()
        return super().run_post_stop_hook()
