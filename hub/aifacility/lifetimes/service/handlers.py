"""REST API and web page of the lifetimes service.

Authentication is JupyterHub's (`HubOAuthenticated`: a token in `Authorization`, or the service's OAuth cookie
in a browser); authorisation is by custom scope with the usual user filter, checked here on every request:

- `custom:lifetimes:read!user=<owner>` to see a server's remaining time,
- `custom:lifetimes:extend!user=<owner>` to extend it.

Every user holds both for themselves (role `user`), admins for everyone. A user asking about someone else's
server gets 404, as from the hub's own API, so that the existence of other users' servers is not revealed.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web
from tornado.escape import url_escape, xhtml_escape
from tornado.httpclient import HTTPClientError

from aifacility.facility.model import Facility
from aifacility.hubapi import HubClient
from aifacility.hubservice import error_text, fail
from aifacility.lifetimes.policy import ExtensionRefused, SessionTimes, check_extension, when
from aifacility.lifetimes.sessions import accelerator_text, describe, times_from_model
from aifacility.lifetimes.store import ExtensionStore

READ = "custom:lifetimes:read"
EXTEND = "custom:lifetimes:extend"
# An extension's body is a dozen bytes ({"hours": 2}); a form's a few dozen.
MAX_BODY_BYTES = 4096
# Bodies up to this size are read (and dropped) before the 413, so that the client hears it.
DISCARD_LIMIT = 64 * 1024 * 1024


def too_large(size: int) -> str:
    return (f"The request's body is {size} bytes; at most {MAX_BODY_BYTES} are accepted. "
            'Send only the extension, e.g. {"hours": 2}.')


def now() -> datetime:
    return datetime.now(UTC)


class Base(HubOAuthenticated, web.RequestHandler):
    @property
    def facility(self) -> Facility:
        return self.settings["facility"]

    @property
    def store(self) -> ExtensionStore:
        return self.settings["store"]

    @property
    def hub(self) -> HubClient:
        return self.settings["hub"]

    def who(self) -> dict[str, Any]:
        user = self.current_user
        if not user:
            raise fail(403, "Missing or invalid credentials.")
        return user

    def may(self, scope: str, owner: str) -> bool:
        return bool(self.hub_auth.check_scopes(f"{scope}!user={owner}", self.who()))

    async def server_times(self, owner: str, server: str) -> SessionTimes:
        """The running server's schedule; 404 unless it exists, runs and the caller may read it."""
        label = f"server {server!r}" if server else "default server"
        not_found = fail(404, f"{owner} has no running {label} that you can see.")
        if not self.may(READ, owner):
            raise not_found
        servers = await self.user_servers(owner)
        model = (servers or {}).get(server)
        times = times_from_model(self.facility, self.store, owner, model) if model else None
        if times is None:
            raise not_found
        return times

    async def user_servers(self, owner: str) -> dict[str, dict[str, Any]] | None:
        try:
            return await self.hub.servers(owner)
        except (HTTPClientError, OSError) as e:
            raise fail(502, f"The hub did not answer about {owner}'s servers ({e}); try again.") from None

    def extend(self, owner: str, server: str, times: SessionTimes, add_hours: object) -> SessionTimes:
        """Apply an extension (policy-checked, stored before we answer); 403 for readers without extend."""
        if not self.may(EXTEND, owner):
            raise fail(403, f"You may see but not extend {owner}'s servers.")
        t = now()
        try:
            total = check_extension(times, add_hours, t)
        except ExtensionRefused as e:
            raise fail(400, f"Cannot extend: {e}.") from None
        self.store.set_extended(owner, server, times.key, total, by=self.who()["name"])
        return dataclasses.replace(times, extended=total)


class APIHandler(Base):
    """JSON in, JSON out; errors as {"status", "message"} like the hub's own API."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = error_text(kwargs.get("exc_info", (None, None, None))[1], status_code)
        if status_code >= 500 and status_code != 502:
            message = "The lifetimes service failed on this request; the administrators can find why in its log."
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def write_json(self, data: object) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def model(self, user: str, server: str, times: SessionTimes) -> dict[str, Any]:
        """One server's schedule, and the accelerator its profile holds (for the session's status bar)."""
        return {**describe(user, server, times, now()),
                "accelerator": accelerator_text(self.facility, times.limits.profile)}


class UserSessionsAPI(APIHandler):
    """GET api/users/<user>: every running server of the user, with its schedule."""

    async def get(self, user: str) -> None:
        if not self.may(READ, user):
            raise fail(404, f"No user {user} that you can see.")
        servers = await self.user_servers(user)
        if servers is None:
            raise fail(404, f"No user {user} that you can see.")
        t = now()
        out = []
        for name, model in sorted(servers.items()):
            times = times_from_model(self.facility, self.store, user, model)
            if times is not None:
                out.append(describe(user, name, times, t))
        self.write_json({"user": user, "servers": out})


class ServerSessionAPI(APIHandler):
    """GET api/users/<user>/server (default server) or .../servers/<name>: the server's schedule."""

    async def get(self, user: str, server: str | None = None) -> None:
        server = server or ""  # the route's optional group: None for the default server
        times = await self.server_times(user, server)
        self.write_json(self.model(user, server, times))


@web.stream_request_body
class ExtendAPI(APIHandler):
    """POST api/users/<user>/server/extend, body {"hours": 2}: add to the lifetime, up to the profile's cap.

    The body is read as it arrives and only its first MAX_BODY_BYTES are kept: a larger one is read to its end
    (so that the client hears the answer) and answered with a 413, without holding it in memory. Bodies that
    announce more than DISCARD_LIMIT bytes are refused at once.
    """

    _body: bytearray
    _received = 0

    def prepare(self) -> None:
        self._body = bytearray()
        announced = self.request.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > DISCARD_LIMIT:
            raise fail(413, too_large(int(announced)))
        self.request.connection.set_max_body_size(DISCARD_LIMIT)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if len(self._body) < MAX_BODY_BYTES:
            self._body += chunk[:MAX_BODY_BYTES - len(self._body)]

    async def post(self, user: str, server: str | None = None) -> None:
        server = server or ""
        if self._received > MAX_BODY_BYTES:
            raise fail(413, too_large(self._received))
        try:
            body = json.loads(bytes(self._body) or b"null")
        except (ValueError, RecursionError):
            raise fail(400, 'The body must be JSON, e.g. {"hours": 2}.') from None
        if not isinstance(body, dict) or "hours" not in body:
            raise fail(400, 'The body must be a JSON object with "hours", e.g. {"hours": 2}.')
        unknown = sorted(set(body) - {"hours"})
        if unknown:
            raise fail(400, f"Unknown field(s) {', '.join(unknown)}; only \"hours\" is accepted.")
        times = await self.server_times(user, server)
        times = self.extend(user, server, times, body["hours"])
        self.write_json(self.model(user, server, times))


class PageHandler(Base):
    """The page the hub's "Extend" button leads to: the signed-in user's sessions, with extend forms."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = error_text(kwargs.get("exc_info", (None, None, None))[1], status_code)
        if status_code >= 500 and status_code != 502:
            message = "This page failed; the administrators can find why in the lifetimes service's log."
        self.finish(f"<!doctype html><title>{status_code}</title><p>{xhtml_escape(message)}</p>"
                    f'<p><a href="{xhtml_escape(self.settings["hub_home"])}">Back to the hub</a></p>')

    @web.authenticated
    async def get(self) -> None:
        await self.show(error=None, notice=self.get_argument("notice", None))

    @web.authenticated
    async def post(self) -> None:
        owner = self.who()["name"]
        if len(self.request.body) > MAX_BODY_BYTES:
            self.set_status(413)
            await self.show(error=too_large(len(self.request.body)), notice=None)
            return
        server = self.get_body_argument("server", "")
        raw = self.get_body_argument("hours", "")
        try:
            add_hours: object = float(raw)
        except ValueError:
            add_hours = raw
        try:
            times = await self.server_times(owner, server)
            times = self.extend(owner, server, times, add_hours)
        except web.HTTPError as e:
            self.set_status(e.status_code)
            await self.show(error=error_text(e, e.status_code), notice=None)
            return
        self.redirect(f"{self.settings['prefix']}?notice=" + url_escape(
            f"Extended: the session now ends at {when(times.deadline)}."))

    async def show(self, error: str | None, notice: str | None) -> None:
        owner = self.who()["name"]
        servers = await self.user_servers(owner) or {}
        t = now()
        sessions = []
        for name, model in sorted(servers.items()):
            times = times_from_model(self.facility, self.store, owner, model)
            if times is not None:
                sessions.append(describe(owner, name, times, t))
        self.render("lifetimes.html", sessions=sessions, error=error, notice=notice, user=owner,
                    prefix=self.settings["prefix"], hub_home=self.settings["hub_home"])
