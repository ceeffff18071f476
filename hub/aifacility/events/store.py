"""Events, their join codes and their log, in the facility's admin database (the policy store's engine).

A join code is shown once, when it is made; only its SHA-256 is kept. Using one is a single UPDATE that succeeds
for exactly one caller, so a code shared by two people makes one account, and the second gets a clear refusal.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from aifacility.events.model import JOIN_LEAD, Event
from aifacility.events.schema import event_codes, event_log, events

# No 0/O, 1/I/L: codes are read aloud and copied from slides.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_CHARS = 8


class JoinRefused(ValueError):
    """A join code cannot be used; the message says why, for the person who typed it."""


def normalize_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _hash(code: str) -> str:
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return f"{raw[:4]}-{raw[4:]}"


@dataclass(frozen=True)
class StoredEvent:
    event: Event
    state: str  # scheduled | ended | cancelled
    created_by: str
    created_at: float
    ended_at: float | None
    report: dict[str, Any] | None
    codes: int
    codes_used: int

    def phase(self, now: datetime) -> str:
        """scheduled | running | ended | cancelled, for people."""
        if self.state != "scheduled":
            return self.state
        return "running" if self.event.starts_at <= now < self.event.ends_at else "scheduled"

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {**self.event.model_dump(mode="json"), "state": self.phase(now), "group": self.event.group,
                "created_by": self.created_by, "created_at": self.created_at, "ended_at": self.ended_at,
                "join_codes": {"made": self.codes, "used": self.codes_used}, "report": self.report}


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- reading ----------------------------------------------------------------------------------------------

    def all(self) -> list[StoredEvent]:
        with self.engine.connect() as conn:
            counts = {r.event: (r.made, r.used) for r in conn.execute(
                select(event_codes.c.event, func.count().label("made"), func.count(event_codes.c.used_by).label("used"))
                .group_by(event_codes.c.event))}
            rows = conn.execute(select(events).order_by(events.c.created_at)).all()
        return [StoredEvent(Event.model_validate_json(r.body), r.state, r.created_by, r.created_at, r.ended_at,
                            json.loads(r.report) if r.report else None, *counts.get(r.name, (0, 0)))
                for r in rows]

    def get(self, name: str) -> StoredEvent | None:
        return next((e for e in self.all() if e.event.name == name), None)

    def participants(self, name: str) -> list[str]:
        """The temporary accounts made with the event's join codes."""
        with self.engine.connect() as conn:
            return [r.used_by for r in conn.execute(
                select(event_codes.c.used_by).where((event_codes.c.event == name) & event_codes.c.used_by.is_not(None))
                .order_by(event_codes.c.idx))]

    def is_temporary(self, user: str) -> bool:
        """Whether `user` is a temporary account of an event that has not ended."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(event_codes.c.event).join(events, events.c.name == event_codes.c.event)
                .where((event_codes.c.used_by == user) & (events.c.state == "scheduled"))).first() is not None

    def history(self, name: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [{"at": r.at, "actor": r.actor, "action": r.action, "message": r.message} for r in conn.execute(
                select(event_log).where(event_log.c.event == name).order_by(event_log.c.id))]

    # --- writing ----------------------------------------------------------------------------------------------

    def create(self, event: Event, actor: str) -> list[str]:
        """Save a checked event and make its join codes; the codes, which are never shown again."""
        now = time.time()
        codes = [new_code() for _ in range(event.participants.join_codes)]
        with self.engine.begin() as conn:
            conn.execute(events.insert().values(name=event.name, body=event.model_dump_json(), state="scheduled",
                                                created_by=actor, created_at=now))
            self._insert_codes(conn, event.name, 0, codes)
            self._log(conn, now, event.name, actor, "created",
                      f"{actor} created the event with {len(codes)} join code(s)")
        return codes

    def add_codes(self, name: str, count: int, actor: str) -> list[str]:
        codes = [new_code() for _ in range(count)]
        with self.engine.begin() as conn:
            start = conn.execute(select(func.coalesce(func.max(event_codes.c.idx), -1))
                                 .where(event_codes.c.event == name)).scalar_one() + 1
            self._insert_codes(conn, name, start, codes)
            self._log(conn, time.time(), name, actor, "codes", f"{actor} made {count} more join code(s)")
        return codes

    def account_of(self, code: str) -> str | None:
        """The account a join code makes (whether or not it is used yet); None for an unknown code."""
        with self.engine.connect() as conn:
            row = conn.execute(select(event_codes.c.event, event_codes.c.idx)
                               .where(event_codes.c.code_hash == _hash(code))).first()
            if row is None:
                return None
            body = conn.execute(select(events.c.body).where(events.c.name == row.event)).scalar_one()
        return Event.model_validate_json(body).temp_user(row.idx + 1)

    def redeem(self, code: str, now: datetime) -> tuple[Event, str]:
        """Use a join code once: the event and the temporary account it creates. JoinRefused says why not."""
        digest = _hash(code)
        with self.engine.begin() as conn:
            row = conn.execute(select(event_codes.c.event, event_codes.c.idx, event_codes.c.used_by)
                               .where(event_codes.c.code_hash == digest)).first()
            if row is None:
                raise JoinRefused("This join code is not known: check it with your organiser (letters and digits, "
                                  "e.g. ABCD-EF23).")
            ev = conn.execute(select(events.c.body, events.c.state).where(events.c.name == row.event)).one()
            event = Event.model_validate_json(ev.body)
            if ev.state != "scheduled" or now >= event.ends_at:
                raise JoinRefused(f"The event '{event.title}' is over: its join codes no longer work.")
            if now < event.starts_at - JOIN_LEAD:
                raise JoinRefused(f"The event '{event.title}' starts at {event.starts_at:%Y-%m-%d %H:%M} UTC; "
                                  f"join codes work from {JOIN_LEAD.seconds // 60} minutes before.")
            if row.used_by is not None:
                raise JoinRefused("This join code has been used already: each code makes one account. Ask your "
                                  "organiser for a code of your own.")
            user = event.temp_user(row.idx + 1)
            done = conn.execute(update(event_codes).where((event_codes.c.code_hash == digest)
                                                          & event_codes.c.used_by.is_(None))
                                .values(used_by=user, used_at=now.timestamp()))
            if done.rowcount != 1:  # another request used it between the read and the write
                raise JoinRefused("This join code has been used already: each code makes one account.")
            self._log(conn, now.timestamp(), event.name, user, "joined", f"{user} joined with a join code")
        return event, user

    def cancel(self, name: str, actor: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(events).where((events.c.name == name) & (events.c.state == "scheduled"))
                         .values(state="cancelled", ended_at=time.time()))
            self._log(conn, time.time(), name, actor, "cancelled", f"{actor} cancelled the event")

    def finish(self, name: str, report: dict[str, Any], message: str) -> None:
        """Mark the event ended with its report (the keeper's last step; idempotent)."""
        with self.engine.begin() as conn:
            conn.execute(update(events).where(events.c.name == name)
                         .values(state="ended", ended_at=time.time(), report=json.dumps(report)))
            self._log(conn, time.time(), name, "event-keeper", "ended", message)

    def log(self, name: str, actor: str, action: str, message: str) -> None:
        with self.engine.begin() as conn:
            self._log(conn, time.time(), name, actor, action, message)

    @staticmethod
    def _insert_codes(conn: Any, name: str, start: int, codes: list[str]) -> None:
        if codes:
            conn.execute(event_codes.insert(), [{"event": name, "idx": start + i, "code_hash": _hash(c)}
                                                for i, c in enumerate(codes)])

    @staticmethod
    def _log(conn: Any, at: float, name: str, actor: str, action: str, message: str) -> None:
        conn.execute(event_log.insert().values(at=at, event=name, actor=actor, action=action, message=message))


def utcnow() -> datetime:
    return datetime.now(UTC)
