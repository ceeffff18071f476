"""What an event is, and the checks an event must pass before it is saved (pure functions of the facility, the
other events and the time). Every problem is listed at once, in words an organiser can act on."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aifacility.facility.model import Facility
from aifacility.facility.quantity import parse_quantity
from aifacility.kueue.render import group_accelerators
from aifacility.quotas.policy import known_groups

NAME = re.compile(r"^[a-z][a-z0-9-]{2,30}[a-z0-9]$")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_CODES = 500
MAX_DAYS = 31
# Join codes work from this long before the start: participants can log in while the organiser introduces.
JOIN_LEAD = timedelta(hours=1)
# How far in the past a start may be when the event is created (clocks and forms are not exact).
SKEW = timedelta(minutes=5)


class EventError(ValueError):
    """The event is not acceptable; the message lists every problem."""


class Participants(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(default_factory=list, max_length=50)
    users: list[str] = Field(default_factory=list, max_length=1000)
    join_codes: int = Field(default=0, ge=0, le=MAX_CODES)

    @field_validator("users")
    @classmethod
    def _users(cls, v: list[str]) -> list[str]:
        bad = [u for u in v if not USERNAME.match(u)]
        if bad:
            raise ValueError(f"not usernames: {', '.join(bad[:5])}")
        return sorted(set(v))


class Reservation(BaseModel):
    """Devices held for the event's participants during its window (taken from the groups' nominal quotas, lent
    back to them outside it)."""

    model_config = ConfigDict(extra="forbid")

    accelerator: str = Field(min_length=1, max_length=64)
    count: int = Field(ge=1, le=1000)


class EventProfile(BaseModel):
    """The profile participants get on the spawn form during the event."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=64)
    cpu: str = Field(default="2", max_length=16)
    memory: str = Field(default="8Gi", max_length=16)
    # One device of the reservation per session, when the event reserves devices.
    accelerator: bool = True

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError("must be a quantity such as 2 or 8Gi")
        try:
            amount = parse_quantity(str(v))
        except ValueError:
            raise ValueError(f"'{v}' is not a quantity such as 2 or 8Gi") from None
        if amount <= 0:
            raise ValueError("must be more than 0")
        return str(v)


class Material(BaseModel):
    """Teaching material: a git repository pulled into each participant's home with nbgitpuller when they open
    the session, merging upstream changes without ever overwriting theirs."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(min_length=1, max_length=1024, pattern=r"^(https?|file)://[^\s]+$")
    branch: str = Field(default="main", pattern=r"^[A-Za-z0-9._/-]{1,100}$")

    @property
    def directory(self) -> str:
        """Where nbgitpuller puts it in the home: the repository's name."""
        return self.repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "material"


class Event(BaseModel):
    """An event as organisers write it (the admin service's API and form, `aifacility admin event create`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=4, max_length=32)
    title: str = Field(min_length=1, max_length=200)
    starts_at: datetime
    ends_at: datetime
    organisers: list[str] = Field(default_factory=list, max_length=20)
    participants: Participants = Field(default_factory=Participants)
    reservation: Reservation | None = None
    profile: EventProfile | None = None
    material: Material | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("use 4 to 32 lowercase letters, digits and dashes, starting with a letter "
                             "(it names the event's group and temporary accounts)")
        return v

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2027-03-01T09:00:00+01:00 or ...Z for UTC")
        return v.astimezone(UTC)

    @field_validator("organisers")
    @classmethod
    def _organisers(cls, v: list[str]) -> list[str]:
        bad = [u for u in v if not USERNAME.match(u)]
        if bad:
            raise ValueError(f"not usernames: {', '.join(bad[:5])}")
        return sorted(set(v))

    @property
    def group(self) -> str:
        """The hub group of the event's participants."""
        return f"event-{self.name}"

    def temp_user(self, index: int) -> str:
        """The temporary account of the `index`-th join code."""
        return f"{self.name}-{index:03d}"

    def joinable(self, now: datetime) -> bool:
        return self.starts_at - JOIN_LEAD <= now < self.ends_at


def parse_event(body: Any, actor: str) -> Event:
    """An event from a request body; the actor is always one of its organisers. EventError lists the problems."""
    if not isinstance(body, dict):
        raise EventError('The body must be a JSON object, e.g. {"name": "school-2027", "title": "...", '
                         '"starts_at": "2027-03-01T09:00:00Z", "ends_at": "2027-03-05T18:00:00Z"}.')
    try:
        event = Event.model_validate(body)
    except ValidationError as e:
        raise EventError("; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}"
                                   for err in e.errors())) from None
    return event.model_copy(update={"organisers": sorted({*event.organisers, actor})})


def check(facility: Facility, event: Event, others: Iterable[Event], now: datetime) -> None:
    """EventError when the event cannot run here: its window, its groups, its name, its overlap with others."""
    problems = []
    if event.ends_at <= event.starts_at:
        problems.append("ends_at must be after starts_at")
    elif event.ends_at - event.starts_at > timedelta(days=MAX_DAYS):
        problems.append(f"an event lasts at most {MAX_DAYS} days")
    if event.starts_at < now - SKEW:
        problems.append(f"starts_at {event.starts_at:%Y-%m-%d %H:%M} UTC is in the past")
    unknown = sorted(set(event.participants.groups) - known_groups(facility))
    if unknown:
        problems.append(f"unknown groups: {', '.join(unknown)} (the facility knows "
                        f"{', '.join(sorted(known_groups(facility)))})")
    if not (event.participants.groups or event.participants.users or event.participants.join_codes):
        problems.append("name its participants: IAM groups, usernames or a number of join codes")
    problems += _resources(facility, event)
    for other in others:
        if other.name == event.name:
            problems.append(f"an event named '{event.name}' exists already")
        elif other.starts_at < event.ends_at and event.starts_at < other.ends_at:
            # One event at a time: the facility has one events queue, and one set of organisers' eyes on it.
            problems.append(f"it overlaps '{other.name}' ({other.starts_at:%Y-%m-%d %H:%M} to "
                            f"{other.ends_at:%Y-%m-%d %H:%M} UTC): move it or shorten one of them")
    if problems:
        raise EventError("; ".join(problems) + ".")


def lendable(facility: Facility, accelerator: str) -> dict[str, int]:
    """Per group (the events queue aside), its nominal quota of `accelerator`: what a reservation takes from."""
    return {g: n for g in facility.queues.groups if g != facility.events.queue
            if (n := group_accelerators(facility, g).get(accelerator, 0)) > 0}


def _resources(facility: Facility, event: Event) -> list[str]:
    problems = []
    images = {i.name for i in facility.images}
    r, p = event.reservation, event.profile
    if r is not None:
        if not facility.queues.enabled or facility.events.queue is None:
            problems.append("reservation: this facility does not let events reserve devices (its facility file "
                            "names no events.queue); ask its administrators")
        elif r.accelerator not in {a.name for a in facility.accelerators}:
            problems.append(f"reservation.accelerator: unknown accelerator '{r.accelerator}' (known: "
                            f"{', '.join(a.name for a in facility.accelerators)})")
        else:
            most = sum(lendable(facility, r.accelerator).values())
            if r.count > most:
                problems.append(f"reservation.count: the groups' queues hold {most} "
                                f"{facility.accelerator(r.accelerator).display_name} in all; reserve at most {most}")
        if p is None:
            problems.append("reservation: give the event a profile too, or its participants cannot use it")
    if p is not None:
        if p.image not in images:
            problems.append(f"profile.image: unknown image '{p.image}' (known: {', '.join(sorted(images))})")
        if parse_quantity(p.cpu) > 64 or parse_quantity(p.memory) > parse_quantity("512Gi"):
            problems.append("profile: at most 64 cores and 512Gi of memory per session")
    if event.material is not None and p is None:
        problems.append("material: give the event a profile too: the material is pulled when its sessions open")
    return problems
