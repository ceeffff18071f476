"""An event's reservation, profile and material as layers over the facility: the devices move from the groups'
queues to the events queue during the window only, and that queue neither lends nor borrows them; the profile is
offered to participants while the event is on; nbgitpuller merges upstream material without overwriting a
participant's edits."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aifacility.events.model import EventError, check, parse_event
from aifacility.events.reservation import apply, event_profile, participates, pull_url, reserving, running
from aifacility.events.store import StoredEvent
from aifacility.facility import load_facility
from aifacility.kueue.render import cluster_queue, group_accelerators

FAC = load_facility()
START = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def event(**kw: object) -> StoredEvent:
    body = {"name": "school-2027", "title": "HEP ML school", "starts_at": START.isoformat(),
            "ends_at": (START + timedelta(days=2)).isoformat(), "participants": {"join_codes": 10, "groups": ["ml"]},
            "reservation": {"accelerator": "mig-1g-10gb", "count": 3},
            "profile": {"image": "ml", "cpu": "2", "memory": "8Gi"},
            "material": {"repo": "https://github.com/example/hep-school.git", "branch": "2027"}, **kw}
    return StoredEvent(parse_event(body, "olga"), "scheduled", "olga", 0.0, None, None, 10, 0)


def _nominal(cq: dict, flavor: str) -> dict:
    return next(r for g in cq["spec"]["resourceGroups"] for f in g["flavors"] if f["name"] == flavor
                for r in f["resources"])


def test_the_reservation_moves_devices_to_the_events_queue_during_its_window_only() -> None:
    e = [event()]
    lead = timedelta(minutes=FAC.events.reserve_lead_minutes)
    assert reserving(e, START - lead - timedelta(seconds=1), lead) == []
    assert [x.name for x in reserving(e, START - lead, lead)] == ["school-2027"]
    assert reserving(e, START + timedelta(days=2), lead) == []
    held = apply(FAC, reserving(e, START, lead), [])
    assert group_accelerators(held, "events")["mig-1g-10gb"] == 3
    assert group_accelerators(held, "ml")["mig-1g-10gb"] == group_accelerators(FAC, "ml")["mig-1g-10gb"] - 3
    assert group_accelerators(held, "physics") == group_accelerators(FAC, "physics")
    slice_quota = _nominal(cluster_queue(held, "events"), "mig-1g-10gb")
    assert slice_quota == {"name": "nvidia.com/mig-1g.10gb", "nominalQuota": "3", "borrowingLimit": "0",
                           "lendingLimit": "0"}  # held: not lent to the cohort, no more borrowed
    assert _nominal(cluster_queue(held, "ml"), "mig-1g-10gb")["nominalQuota"] == "1"
    assert apply(FAC, [], []) is FAC


def test_a_reservation_takes_from_the_largest_quota_first() -> None:
    e = event(reservation={"accelerator": "t4", "count": 5}).event
    held = apply(FAC, [e], [])
    assert (group_accelerators(held, "physics")["t4"], group_accelerators(held, "ml")["t4"]) == (0, 1)
    assert group_accelerators(held, "events")["t4"] == 5


def test_the_event_profile_is_offered_to_participants_while_the_event_is_on() -> None:
    stored = event(participants={"users": ["bob"], "groups": ["ml"]})
    assert running([stored], START - timedelta(minutes=1)) == []
    on = running([stored], START)
    facility = apply(FAC, [], on)
    profile = facility.profile("event-school-2027")
    assert profile.groups == ["events"] and profile.queueable and profile.images == ["ml"]
    assert profile.accelerator is not None and (profile.accelerator.name, profile.accelerator.count) == (
        "mig-1g-10gb", 1)
    assert profile.default_url == pull_url(stored.event)
    assert pull_url(stored.event) == ("/git-pull?repo=https%3A%2F%2Fgithub.com%2Fexample%2Fhep-school.git"
                                      "&branch=2027&targetpath=hep-school&urlpath=lab%2Ftree%2Fhep-school")
    ev = stored.event
    assert participates(ev, "bob", []) and participates(ev, "carol", ["ml"])
    assert participates(ev, "school-2027-004", ["event-school-2027"]) and not participates(ev, "eve", ["physics"])
    cpu_only = event(reservation=None, profile={"image": "hep", "accelerator": False}).event
    p = event_profile(FAC, cpu_only)
    assert p is not None and p.accelerator is None and p.default_url is not None


@pytest.mark.parametrize(("changes", "needle"), [
    ({"reservation": {"accelerator": "mig-1g-10gb", "count": 5}},
     "hold 4 A100 MIG 1g.10gb slice in all; reserve at most 4"),
    ({"reservation": {"accelerator": "h100", "count": 1}}, "unknown accelerator 'h100'"),
    ({"reservation": {"accelerator": "t4", "count": 0}}, "greater than or equal to 1"),
    ({"profile": None}, "give the event a profile too, or its participants cannot use it"),
    ({"profile": {"image": "tensorflow"}}, "profile.image: unknown image 'tensorflow'"),
    ({"profile": {"image": "ml", "memory": "lots"}}, "'lots' is not a quantity"),
    ({"profile": {"image": "ml", "cpu": 128}}, "at most 64 cores"),
    ({"material": {"repo": "git@github.com:x/y.git"}}, "String should match pattern"),
    ({"material": {"repo": "https://x/y", "branch": "main; rm -rf"}}, "String should match pattern"),
    ({"reservation": None, "profile": None}, "material: give the event a profile too"),
])
def test_reservations_profiles_and_material_that_cannot_be_are_refused(changes: dict, needle: str) -> None:
    body = {"name": "school-2027", "title": "HEP ML school", "starts_at": START.isoformat(),
            "ends_at": (START + timedelta(days=2)).isoformat(), "participants": {"join_codes": 10},
            "reservation": {"accelerator": "mig-1g-10gb", "count": 3}, "profile": {"image": "ml"},
            "material": {"repo": "https://github.com/example/hep-school.git"}}
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(EventError) as e:
        check(FAC, parse_event(body, "olga"), [], START - timedelta(days=1))
    assert needle in str(e.value)


def test_a_facility_without_an_events_queue_refuses_reservations() -> None:
    plain = FAC.model_copy(update={"events": FAC.events.model_copy(update={"queue": None})})
    with pytest.raises(EventError, match=r"names no events\.queue"):
        check(plain, event().event, [], START - timedelta(days=1))


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_nbgitpuller_keeps_a_participant_s_edit_across_a_later_pull(tmp_path: Path) -> None:
    """The material is pulled with nbgitpuller (what the profile's start page runs): upstream changes arrive, the
    participant's own edits stay."""
    from nbgitpuller.pull import GitPuller

    upstream = tmp_path / "upstream"
    upstream.mkdir()
    _git("init", "-q", "-b", "main", cwd=upstream)
    (upstream / "lesson1.py").write_text("print('lesson 1')\n")
    (upstream / "lesson2.py").write_text("print('lesson 2')\n")
    _git("add", ".", cwd=upstream)
    _git("commit", "-q", "-m", "material", cwd=upstream)
    home = tmp_path / "home" / "material"
    for _ in GitPuller(f"file://{upstream}", str(home), branch="main").pull():
        pass
    assert (home / "lesson1.py").read_text() == "print('lesson 1')\n"
    (home / "lesson1.py").write_text("print('my answer')\n")  # the participant's edit
    (upstream / "lesson2.py").write_text("print('lesson 2, fixed')\n")  # the organiser's fix
    (upstream / "lesson3.py").write_text("print('lesson 3')\n")
    _git("add", ".", cwd=upstream)
    _git("commit", "-q", "-m", "day 2", cwd=upstream)
    for _ in GitPuller(f"file://{upstream}", str(home), branch="main").pull():
        pass
    assert (home / "lesson1.py").read_text() == "print('my answer')\n"
    assert (home / "lesson2.py").read_text() == "print('lesson 2, fixed')\n"
    assert (home / "lesson3.py").exists()


def test_the_events_queue_must_be_one_of_the_facility_s_queue_groups(tmp_path: Path) -> None:
    import yaml

    from aifacility.facility import demo_facility_path
    from aifacility.facility.loader import FacilityError

    data = yaml.safe_load(demo_facility_path().read_text())
    data["events"] = {"queue": "workshops"}
    path = tmp_path / "facility.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FacilityError, match=r"events\.queue: 'workshops' has no queue in queues\.groups"):
        load_facility(path)


def test_the_image_is_pre_pulled_on_the_reserved_accelerator_s_nodes_by_a_quiet_daemonset() -> None:
    from aifacility.events.prepull import daemonset

    ds = daemonset(FAC, event().event)
    assert ds is not None and ds["metadata"] == {
        "name": "event-prepull-school-2027", "namespace": "aifacility",
        "labels": {"aifacility.io/event": "school-2027", "app.kubernetes.io/component": "event-prepull",
                   "app.kubernetes.io/managed-by": "aifacility"}}
    pod = ds["spec"]["template"]["spec"]
    mig = FAC.accelerator("mig-1g-10gb")
    assert pod["nodeSelector"] == mig.node_selector
    assert pod["tolerations"] == [t.model_dump(exclude_none=True) for t in mig.tolerations]
    (hold,) = pod["containers"]
    assert hold["image"] == next(i.image for i in FAC.images if i.name == "ml")
    assert hold["resources"]["requests"] == {"cpu": "1m", "memory": "16Mi"}  # holds the image, not the node
    assert "nvidia.com/mig-1g.10gb" not in str(hold["resources"])
    assert pod["securityContext"]["runAsNonRoot"] and hold["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    everywhere = daemonset(FAC, event(reservation=None, profile={"image": "hep", "accelerator": False}).event)
    assert everywhere is not None and everywhere["spec"]["template"]["spec"]["nodeSelector"] == {}
    assert daemonset(FAC, event(reservation=None, profile=None, material=None).event) is None
