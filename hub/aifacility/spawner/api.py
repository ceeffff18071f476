"""The hub's spawn API, with the options checked before JupyterHub stores anything of the spawn.

JupyterHub's `POST /hub/api/users/<user>/server` (and `.../servers/<name>`) hands the body to `User.spawn`, which
commits a server row, creates the server's API token and saves the body as the server's `user_options` before
any spawner hook runs; a body that is not an object then fails with a TraitError (a 500), leaving the token and
the bad options behind. No hook of JupyterHub's runs earlier, so `install()` puts this subclass of its handler in
the routes of JupyterHub's REST API: the same handler, which first checks the body (options.py) and answers a bad
one with a 400 (413 when too large) and a message a person can act on.
"""

from __future__ import annotations

from typing import Any

from jupyterhub import apihandlers
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from aifacility.spawner.options import EXAMPLE, OptionsRefused, parse_body, quote


class CheckedUserServerAPIHandler(UserServerAPIHandler):
    """JupyterHub's start/stop server API; a start's options are checked before anything is stored."""

    @needs_scope("servers")
    async def post(self, user_name: str, server_name: str = "") -> None:
        try:
            options = parse_body(self.request.body)
            # A hub without these checks may have saved a refused body as the server's options: JupyterHub then
            # cannot even build the server's spawner (a TraitError, a 500), and a spawn without a body (what the
            # spawn keeper sends) would re-use them. They are dropped; other saved options are the spawner's to
            # judge, as they were when saved.
            if self._drop_saved_non_object(user_name, server_name) and options is None:
                raise OptionsRefused("The options saved at this server's previous spawn were not an object and "
                                     f"have been dropped; send the options, e.g. {EXAMPLE}.")
        except OptionsRefused as e:
            self.log.info("Refused the spawn options for %s: %s", user_name, e)
            raise web.HTTPError(e.status, "%s", str(e)) from None
        if options is not None:
            self._check_choice(user_name, server_name, options)
        await super().post(user_name, server_name)

    def _check_choice(self, user_name: str, server_name: str, options: dict[str, Any]) -> None:
        """What the options mean for this user (a profile of their groups, its image, queueing), when the
        spawner can say it before a spawn: a spawner's `check_choice_before_spawn(options)` raises a 400."""
        user = self.find_user(user_name)
        if user is None:
            return  # JupyterHub's handler answers 404
        # the server's spawner, or, for a named server not created yet, the default one (same user, same rules)
        spawner = user.get_spawner(server_name if server_name in user.orm_spawners else "")
        check = getattr(spawner, "check_choice_before_spawn", None)
        if check is not None:
            check(options)

    def _drop_saved_non_object(self, user_name: str, server_name: str) -> bool:
        user = self.find_user(user_name)
        orm_spawner = user.orm_spawners.get(server_name) if user is not None else None
        if orm_spawner is None or orm_spawner.user_options is None or isinstance(orm_spawner.user_options, dict):
            return False
        saved = orm_spawner.user_options
        self.log.warning("Dropping the saved options of %s's server %r, which are not an object: %s", user_name,
                         server_name, quote(saved))
        orm_spawner.user_options = None
        self.db.commit()
        return True


def install() -> None:
    """Route JupyterHub's spawn API to CheckedUserServerAPIHandler (idempotent; before the hub builds its routes,
    i.e. from its configuration)."""
    routes = apihandlers.default_handlers
    for i, route in enumerate(routes):
        if len(route) >= 2 and route[1] is UserServerAPIHandler:
            routes[i] = (route[0], CheckedUserServerAPIHandler, *route[2:])
