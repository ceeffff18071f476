"""The REST API of events under /services/admin/api/events (events.service does the work).

Organisers hold `custom:events:write` (role facility-organisers: the facility's `iam.organiser_groups`); admins
hold it too and see every event. Everyone else gets 403, as for the rest of the admin service.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from jupyterhub.utils import url_path_join

from aifacility.admin.service.handlers import WRITE, APIBase
from aifacility.events.model import EventError
from aifacility.events.service import EventService, NotYours, UnknownEvent
from aifacility.events.store import utcnow
from aifacility.hubservice import fail

EVENTS = "custom:events:write"
EVENT = r"(?P<name>[a-z0-9-]{1,64})"
T = TypeVar("T")


class EventsBase(APIBase):
    @property
    def events(self) -> EventService:
        return self.settings["events"]

    def organiser(self) -> tuple[str, bool]:
        """Who asks, and whether they are an admin (all events) rather than an organiser (their own)."""
        user = self.current_user
        if not user:
            raise fail(403, "Only the facility's organisers and administrators may manage events: sign in as one, "
                            "or send your JupyterHub token.")
        if not self.hub_auth.check_scopes(EVENTS, user):
            raise fail(403, f"{user.get('name')} may not manage events: ask the facility's administrators to make "
                            "you an organiser.")
        return str(user["name"]), bool(self.hub_auth.check_scopes(WRITE, user))

    async def run(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except UnknownEvent as e:
            raise fail(404, str(e)) from None
        except NotYours as e:
            raise fail(403, str(e)) from None
        except EventError as e:
            raise fail(400, str(e)) from None


class EventsAPI(EventsBase):
    """GET: the events I may see. POST: create one; the answer holds its join codes, shown this once."""

    async def get(self) -> None:
        me, admin = self.organiser()
        self.write_json(await self.events.visible(me, admin, utcnow()))

    async def post(self) -> None:
        me, _ = self.organiser()
        event, codes = await self.run(self.events.create(self.body(), me, utcnow()))
        self.set_status(201)
        self.set_header("Location", url_path_join(self.request.path, event.name))
        self.write_json({**event.model_dump(mode="json"), "group": event.group, "join_codes": codes,
                         "join_url": "/hub/join"})


class EventAPI(EventsBase):
    """GET: one event with who joined, its log and (once it ended) its usage report. DELETE: cancel it before it
    starts."""

    async def get(self, name: str) -> None:
        me, admin = self.organiser()
        self.write_json(await self.run(self.events.one(name, me, admin, utcnow())))

    async def delete(self, name: str) -> None:
        me, admin = self.organiser()
        await self.run(self.events.cancel(name, me, admin, utcnow()))
        self.set_status(204)
        self.finish()


class EventCodesAPI(EventsBase):
    """POST {"count": N}: N more join codes, shown this once."""

    async def post(self, name: str) -> None:
        me, admin = self.organiser()
        codes = await self.run(self.events.add_codes(name, self.body(), me, admin, utcnow()))
        self.set_status(201)
        self.write_json({"join_codes": codes})
