"""The hub page where a join code becomes a temporary account: /hub/join (JupyterHub's `extra_handlers`).

The code is the credential: a valid, unused code of an event that is open for joining makes the account
`<event>-NNN`, puts it in the event's hub group and logs the browser in, with JupyterHub's own login cookie. The
account goes when the event ends (events.keeper). Everything else gets the page again with the reason, and
nothing is changed.
"""

from __future__ import annotations

import asyncio

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join

from aifacility.events.store import CODE_CHARS, EventStore, JoinRefused, normalize_code, utcnow
from aifacility.quotas.store import policy_store

TEMPLATE = "aifacility-join.html"


class JoinHandler(BaseHandler):
    def initialize(self, policy_db: str) -> None:
        self.policy_db = policy_db

    async def _page(self, error: str = "", status: int = 200) -> None:
        self.set_status(status)
        self.finish(await self.render_template(TEMPLATE, join_error=error, join_url=self.request.path,
                                               login_url=self.settings["login_url"]))

    async def get(self) -> None:
        await self._page()

    async def post(self) -> None:
        code = normalize_code(self.get_body_argument("code", "")[:64])
        if len(code) != CODE_CHARS:
            return await self._page(f"A join code has {CODE_CHARS} letters and digits, e.g. ABCD-EF23.", 400)
        store = EventStore(policy_store(self.policy_db).engine)
        name = await asyncio.to_thread(store.account_of, code)
        if name is not None and self.find_user(name) is not None and not await asyncio.to_thread(
                store.is_temporary, name):
            # Someone (an IAM account) already has this name: a code must never log into an existing account.
            self.log.warning("join code refused: its account name %s belongs to an existing user", name)
            return await self._page("This join code's account name is taken at this facility; ask your organiser "
                                    "for another code (or another event name).", 403)
        try:
            event, name = await asyncio.to_thread(store.redeem, code, utcnow())
        except JoinRefused as e:
            self.log.info("join code refused: %s", e)
            return await self._page(str(e), 403)
        user = self.user_from_username(name)
        group = orm.Group.find(self.db, event.group)
        if group is None:
            group = orm.Group(name=event.group)
            self.db.add(group)
        if group not in user.orm_user.groups:
            user.orm_user.groups.append(group)
        self.db.commit()
        self.set_login_cookie(user)
        self.log.info("%s joined event %s with a join code", name, event.name)
        self.redirect(url_path_join(self.hub.base_url, "home"))
