"""The extension store (survives a reopen, keyed by start) and the culler's arbiter decisions."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from test_lifetimes_policy import T0, facility

from aifacility.lifetimes.culler import Arbiter
from aifacility.lifetimes.store import ExtensionStore


def test_extension_survives_reopening_the_store(tmp_path: Path) -> None:
    ExtensionStore(tmp_path / "l.sqlite").set_extended("alice", "", T0, timedelta(hours=2), by="alice")
    again = ExtensionStore(tmp_path / "l.sqlite")  # a restarted service, or the culler's process
    assert again.extended("alice", "", T0) == timedelta(hours=2)
    # the same server started again later has a fresh lifetime; other servers are untouched
    assert again.extended("alice", "", T0 + timedelta(hours=1)) == timedelta(0)
    assert again.extended("alice", "gpu", T0) == timedelta(0)
    # the started key is normalised: the same instant in another zone is the same server start
    assert again.extended("alice", "", T0.astimezone(datetime.now().astimezone().tzinfo)) == timedelta(hours=2)
    assert again.forget_before(T0 + timedelta(seconds=1)) == 1


def model(user: str, profile: str | None, started: datetime, last_activity: datetime | None) -> dict[str, object]:
    return {"full_name": f"{user}/", "name": "", "ready": True, "started": started.isoformat(),
            "last_activity": last_activity.isoformat() if last_activity else None,
            "user_options": {"profile": profile} if profile else {}}


def arbiter(tmp_path: Path, now: datetime, ready_at: datetime | None = T0) -> tuple[Arbiter, ExtensionStore]:
    """An arbiter whose clock says `now`, for servers spawned at T0 and (unless None) first seen ready then."""
    store = ExtensionStore(tmp_path / "l.sqlite")
    if ready_at is not None:
        for user in ("bob", "carol", "dave"):
            store.observe(user, "", T0, ready_at)
    return Arbiter(facility(accelerator_idle_timeout_minutes=30), store, clock=lambda: now), store


def test_arbiter_stops_expired_sessions_and_honours_extensions(tmp_path: Path) -> None:
    now = T0 + timedelta(hours=4, minutes=1)  # gpu profile: 4 h lifetime
    cull, store = arbiter(tmp_path, now)
    server = model("bob", "gpu", T0, now)
    assert cull(server=server, inactive=timedelta(0), inactive_limit=60) is True
    store.set_extended("bob", "", T0, timedelta(hours=1), by="bob")
    assert cull(server=server, inactive=timedelta(0), inactive_limit=60) is False


def test_arbiter_culls_idle_accelerator_sessions_only(tmp_path: Path) -> None:
    now = T0 + timedelta(hours=1)
    cull, _ = arbiter(tmp_path, now)
    idle_since = now - timedelta(minutes=31)
    assert cull(server=model("carol", "gpu", T0, idle_since)) is True
    assert cull(server=model("carol", "gpu", T0, now - timedelta(minutes=29))) is False
    assert cull(server=model("carol", "cpu", T0, idle_since)) is False  # CPU sessions are not culled when idle
    assert cull(server=model("carol", None, T0, idle_since)) is False  # default profile (cpu)


def test_arbiter_leaves_unknown_shapes_alone(tmp_path: Path) -> None:
    cull, _ = arbiter(tmp_path, T0 + timedelta(days=30))
    assert cull(server={"name": ""}) is False
    assert cull(server={"full_name": "dave/", "started": None}) is False
    assert cull(server=model("dave", "cpu", T0, None) | {"started": None}) is False


def test_a_queued_spawn_starts_its_clocks_when_ready(tmp_path: Path) -> None:
    # spawned at T0, waited 5 h in the Kueue queue: longer than the gpu lifetime (4 h) and the idle timeout
    ready = T0 + timedelta(hours=5)
    server = model("erin", "gpu", T0, T0)  # the hub stamps activity at the spawn request
    cull, store = arbiter(tmp_path, ready, ready_at=None)
    assert cull(server=server) is False  # first seen ready now: the clocks start here
    assert store.observe("erin", "", T0, T0 + timedelta(hours=9)) == (ready, timedelta(0))  # recorded once
    later, _ = arbiter(tmp_path, ready + timedelta(minutes=29))
    assert later(server=server) is False
    idle, _ = arbiter(tmp_path, ready + timedelta(minutes=31))
    assert idle(server=server) is True
