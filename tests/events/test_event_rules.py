"""Events as organisers write them: every mistake gets a message naming it, nothing is saved half-way; join codes
work once, in the window, and the end of an event removes its temporary accounts and reports their usage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UsageRecord
from aifacility.events.keeper import EventKeeper
from aifacility.events.model import Event, EventError, check, parse_event
from aifacility.events.service import EventService, NotYours, UnknownEvent
from aifacility.events.store import EventStore, JoinRefused
from aifacility.facility import load_facility
from aifacility.quotas.store import PolicyStore

FAC = load_facility()
NOW = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)


def body(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "school-2027", "title": "HEP ML school", "starts_at": "2027-03-01T09:00:00Z",
                               "ends_at": "2027-03-05T17:00:00+01:00", "participants": {"join_codes": 10}}
    return {**base, **kw}


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(PolicyStore(f"sqlite:///{tmp_path / 'p.sqlite'}").engine)


def test_an_event_is_read_with_its_organiser_and_times_in_utc() -> None:
    event = parse_event(body(organisers=["olga"]), "dana")
    assert event.organisers == ["dana", "olga"] and event.group == "event-school-2027"
    assert event.ends_at == datetime(2027, 3, 5, 16, 0, tzinfo=UTC)
    assert event.temp_user(7) == "school-2027-007"
    check(FAC, event, [], NOW)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"participants": {"join_codes": -1}}, "participants.join_codes: Input should be greater than or equal to 0"),
    ({"participants": {"join_codes": 501}}, "less than or equal to 500"),
    ({"name": "School 2027"}, "name: Value error, use 4 to 32 lowercase letters"),
    ({"starts_at": "2027-03-01T09:00:00"}, "give a time zone"),
    ({"starts_at": "tomorrow"}, "starts_at: Input should be a valid datetime"),
    ({"title": ""}, "title: String should have at least 1 character"),
    ({"participants": {"users": ["Bob Smith"]}}, "not usernames: Bob Smith"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
])
def test_malformed_events_are_refused_with_the_field_named(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(EventError) as e:
        parse_event(body(**changes), "dana")
    assert needle in str(e.value)
    with pytest.raises(EventError, match="must be a JSON object"):
        parse_event([1, 2], "dana")


@pytest.mark.parametrize(("changes", "needle"), [
    ({"starts_at": "2027-02-28T09:00:00Z"}, "starts_at 2027-02-28 09:00 UTC is in the past"),
    ({"ends_at": "2027-03-01T08:00:00Z"}, "ends_at must be after starts_at"),
    ({"ends_at": "2027-05-01T08:00:00Z"}, "an event lasts at most 31 days"),
    ({"participants": {"groups": ["physics", "astro"]}}, "unknown groups: astro"),
    ({"participants": {}}, "name its participants"),
])
def test_events_that_cannot_run_here_are_refused(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(EventError) as e:
        check(FAC, parse_event(body(**changes), "dana"), [], NOW)
    assert needle in str(e.value)


def test_overlapping_events_and_a_taken_name_are_refused() -> None:
    first = parse_event(body(), "dana")
    overlapping = parse_event(body(name="hackathon", starts_at="2027-03-05T15:00:00Z",
                                   ends_at="2027-03-06T15:00:00Z"), "olga")
    with pytest.raises(EventError, match="it overlaps 'school-2027'"):
        check(FAC, overlapping, [first], NOW)
    with pytest.raises(EventError, match="an event named 'school-2027' exists already"):
        check(FAC, first, [first], NOW)
    after = parse_event(body(name="hackathon", starts_at="2027-03-05T16:00:00Z", ends_at="2027-03-06T15:00:00Z"),
                        "olga")
    check(FAC, after, [first], NOW)  # back to back is fine


def test_a_join_code_works_once_in_its_window(store: EventStore) -> None:
    event = parse_event(body(), "dana")
    codes = store.create(event, "dana")
    assert len(codes) == 10 and len(set(codes)) == 10
    with pytest.raises(JoinRefused, match="starts at 2027-03-01 09:00 UTC; join codes work from 60 minutes"):
        store.redeem(codes[0], NOW - timedelta(hours=1))
    assert store.account_of(codes[3]) == "school-2027-004" and store.account_of("ABCD-EFGH") is None
    got, user = store.redeem(codes[3].lower().replace("-", " "), NOW)  # as people type them
    assert (got.name, user) == ("school-2027", "school-2027-004")
    with pytest.raises(JoinRefused, match="used already"):
        store.redeem(codes[3], NOW)
    with pytest.raises(JoinRefused, match="not known"):
        store.redeem("ABCD-EFGH", NOW)
    with pytest.raises(JoinRefused, match="is over"):
        store.redeem(codes[4], event.ends_at)
    assert store.participants("school-2027") == ["school-2027-004"]
    assert store.is_temporary("school-2027-004") and not store.is_temporary("bob")
    more = store.add_codes("school-2027", 2, "dana")
    assert store.redeem(more[1], NOW)[1] == "school-2027-012"
    stored = store.get("school-2027")
    assert stored is not None and (stored.codes, stored.codes_used) == (12, 2)


def test_only_organisers_and_admins_see_and_change_an_event(store: EventStore) -> None:
    service = EventService(FAC, store)
    _, codes = asyncio.run(service.create(body(organisers=["olga"]), "dana", NOW))
    assert len(codes) == 10
    assert [e["name"] for e in asyncio.run(service.visible("olga", False, NOW))] == ["school-2027"]
    assert asyncio.run(service.visible("oscar", False, NOW)) == []
    assert len(asyncio.run(service.visible("admin", True, NOW))) == 1
    with pytest.raises(NotYours):
        asyncio.run(service.one("school-2027", "oscar", False, NOW))
    with pytest.raises(UnknownEvent):
        asyncio.run(service.one("nope", "dana", True, NOW))
    with pytest.raises(EventError, match="count must be a whole number from 1 to 500"):
        asyncio.run(service.add_codes("school-2027", {"count": 0}, "olga", False, NOW))
    with pytest.raises(EventError, match="at most 500 per event"):
        asyncio.run(service.add_codes("school-2027", {"count": 495}, "olga", False, NOW))
    with pytest.raises(EventError, match="it overlaps"):  # nothing saved: still one event
        asyncio.run(service.create(body(name="second-school"), "olga", NOW))
    assert len(store.all()) == 1
    asyncio.run(service.cancel("school-2027", "olga", False, NOW))
    assert store.get("school-2027").state == "cancelled"  # type: ignore[union-attr]
    with pytest.raises(JoinRefused, match="is over"):
        store.redeem(codes[0], NOW)
    asyncio.run(service.create(body(name="second-school"), "olga", NOW))  # the window is free again


def test_the_end_removes_the_temporary_accounts_and_reports_their_usage(store: EventStore, tmp_path: Path) -> None:
    event = parse_event(body(participants={"join_codes": 3, "users": ["bob"]}), "dana")
    codes = store.create(event, "dana")
    users = [store.redeem(c, NOW)[1] for c in codes[:2]]
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    start = event.starts_at.timestamp()
    begin = datetime.fromtimestamp(start + 600, UTC).isoformat()
    finish = datetime.fromtimestamp(start + 600 + 2 * 3600, UTC).isoformat()
    ledger.ingest([UsageRecord.model_validate({"id": f"r{i}", "user": u, "group": "event-school-2027",
                                              "kind": "notebook", "resource": res, "quantity": q,
                                              "model": "T4" if res == "gpu" else "", "start": begin, "end": finish})
                   for i, (u, res, q) in enumerate([(users[0], "gpu", 1), (users[0], "cpu", 4), (users[1], "cpu", 2)])])
    deleted: list[str] = []

    async def delete(user: str) -> None:
        deleted.append(user)

    class PrePuller:
        calls: list[str] = []

        async def ensure(self, ev: Event) -> bool:
            self.calls.append(f"ensure {ev.name}")
            return True

        async def remove(self, ev: Event) -> None:
            self.calls.append(f"remove {ev.name}")

    pulls = PrePuller()
    clock = [event.starts_at - timedelta(minutes=FAC.events.reserve_lead_minutes)]
    keeper = EventKeeper(FAC, store, ledger, delete, lambda: clock[0], prepuller=pulls)  # type: ignore[arg-type]
    assert asyncio.run(keeper.tick()) == [] and asyncio.run(keeper.tick()) == []
    assert pulls.calls == ["ensure school-2027"]  # from the reservation's start, once
    clock[0] = event.ends_at + timedelta(seconds=1)
    assert asyncio.run(keeper.tick()) == ["school-2027"]
    assert pulls.calls == ["ensure school-2027", "remove school-2027"]
    assert deleted == users
    stored = store.get("school-2027")
    assert stored is not None and stored.state == "ended"
    report = stored.report
    assert report is not None
    rows = {r["user"]: r for r in report["participants"]}
    assert set(rows) == {*users, "bob"} and rows["bob"]["joined_by"] == "named"
    assert rows[users[0]]["gpu_hours"] == pytest.approx(2.0) and rows[users[0]]["cpu_core_hours"] == pytest.approx(8.0)
    assert rows[users[1]]["cpu_core_hours"] == pytest.approx(4.0)
    assert report["totals"]["participants"] == 3
    assert not store.is_temporary(users[0])
    assert asyncio.run(keeper.tick()) == []  # once
    assert [h["action"] for h in store.history("school-2027")] == ["created", "joined", "joined", "prepull", "ended"]
