"""The lifetime arithmetic: deadlines, caps, idle deadlines, warnings and extension refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aifacility.facility.model import Facility
from aifacility.lifetimes.policy import (
    ExtensionRefused,
    SessionTimes,
    check_extension,
    duration,
    limits_for,
    parse_time,
)

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def facility(**sessions: object) -> Facility:
    return Facility.model_validate({
        "name": "t",
        "accelerators": [{"name": "a100", "kind": "gpu", "display_name": "A100", "resource": "nvidia.com/gpu"}],
        "images": [{"name": "py", "display_name": "Python", "image": "python:3.11"}],
        "profiles": [
            {"name": "cpu", "display_name": "CPU", "images": ["py"], "default": True,
             "lifetime_hours": 12, "max_lifetime_hours": 72},
            {"name": "gpu", "display_name": "GPU", "images": ["py"], "accelerator": {"name": "a100"},
             "lifetime_hours": 4, "max_lifetime_hours": 10},
            {"name": "gpu-own", "display_name": "GPU", "images": ["py"], "accelerator": {"name": "a100"},
             "lifetime_hours": 4, "max_lifetime_hours": 10, "idle_timeout_minutes": 20},
        ],
        "sessions": sessions,
    })


def times(profile: str = "gpu", extended_h: float = 0, idle_for: timedelta = timedelta(0),
          **sessions: object) -> SessionTimes:
    last = T0 + timedelta(hours=1) - idle_for  # "now" in these tests is one hour after the start
    return SessionTimes(limits=limits_for(facility(**sessions), profile), started=T0,
                        extended=timedelta(hours=extended_h), last_activity=last)


def test_deadline_is_start_plus_profile_lifetime_plus_extensions() -> None:
    t = times("gpu", extended_h=1.5)
    assert t.deadline == T0 + timedelta(hours=5.5)
    assert t.cap == T0 + timedelta(hours=10)


def test_idle_timeout_only_for_accelerator_profiles_by_default() -> None:
    f = facility(accelerator_idle_timeout_minutes=45)
    assert limits_for(f, "cpu").idle_timeout is None
    assert limits_for(f, "gpu").idle_timeout == timedelta(minutes=45)
    assert limits_for(f, "gpu-own").idle_timeout == timedelta(minutes=20)


def test_unknown_or_missing_profile_gets_the_default_profile_rules() -> None:
    f = facility()
    assert limits_for(f, None).profile == "cpu"
    assert limits_for(f, "removed-since-spawn").profile == "cpu"


def test_idle_deadline_comes_first_when_idle_and_reason_says_so() -> None:
    t = times("gpu", idle_for=timedelta(minutes=50), accelerator_idle_timeout_minutes=60)
    assert t.idle_deadline == T0 + timedelta(hours=1, minutes=10)
    assert t.stop_at == t.idle_deadline and t.reason == "idle"
    # just used, with a long idle timeout: the lifetime ends first
    assert times("gpu", accelerator_idle_timeout_minutes=240).reason == "lifetime"


def test_no_activity_yet_counts_idle_from_start() -> None:
    t = SessionTimes(limits=limits_for(facility(), "gpu"), started=T0, extended=timedelta(0), last_activity=None)
    assert t.idle_deadline == T0 + timedelta(minutes=60)


def test_warning_window_and_expiry() -> None:
    t = times("cpu", warn_before_minutes=30)
    assert not t.warning(t.deadline - timedelta(minutes=31))
    assert t.warning(t.deadline - timedelta(minutes=29))
    assert not t.expired(t.deadline - timedelta(seconds=1))
    assert t.expired(t.deadline)
    assert t.remaining(t.deadline + timedelta(hours=1)) == timedelta(0)


def test_extension_within_step_and_cap_is_added() -> None:
    t = times("gpu", extend_step_hours=4)
    assert check_extension(t, 2, T0 + timedelta(hours=1)) == timedelta(hours=2)
    assert check_extension(times("gpu", extended_h=2), 4, T0 + timedelta(hours=1)) == timedelta(hours=6)  # to the cap


def test_extension_over_the_cap_is_refused_with_cap_and_end() -> None:
    t = times("gpu", extended_h=5, extend_step_hours=4)  # ends at 9 h, cap at 10 h
    with pytest.raises(ExtensionRefused) as e:
        check_extension(t, 2, T0 + timedelta(hours=1))
    msg = str(e.value)
    assert "at most 10 h" in msg and "2026-01-05 18:00:00 UTC" in msg  # the cap
    assert "2026-01-05 17:00:00 UTC" in msg and "at most 1 h more" in msg  # when it ends, what is left


def test_extension_at_the_cap_says_no_more() -> None:
    with pytest.raises(ExtensionRefused, match="cannot be extended any further"):
        check_extension(times("gpu", extended_h=6), 0.5, T0 + timedelta(hours=1))


def test_extension_larger_than_one_step_is_refused() -> None:
    with pytest.raises(ExtensionRefused, match="at most 2 h"):
        check_extension(times("cpu", extend_step_hours=2), 3, T0)


@pytest.mark.parametrize("bad", ["2", None, True, [1], {"h": 1}, 0, -1, float("nan"), float("inf")])
def test_bad_hours_are_refused_with_a_message(bad: object) -> None:
    with pytest.raises(ExtensionRefused, match="hours"):
        check_extension(times("cpu"), bad, T0)


def test_expired_session_cannot_be_extended() -> None:
    t = times("cpu")
    with pytest.raises(ExtensionRefused, match="already reached its end"):
        check_extension(t, 1, t.deadline + timedelta(seconds=5))


def test_extendable_by_is_bounded_by_step_and_cap() -> None:
    assert times("gpu", extend_step_hours=4).extendable_by() == timedelta(hours=4)
    assert times("gpu", extended_h=5, extend_step_hours=4).extendable_by() == timedelta(hours=1)
    assert times("gpu", extended_h=6).extendable_by() == timedelta(0)


def test_hub_timestamps_parse_as_utc() -> None:
    assert parse_time("2026-01-05T08:00:00.123456Z") == T0 + timedelta(microseconds=123456)
    assert parse_time(datetime(2026, 1, 5, 8, 0)) == T0  # the hub database's naive UTC
    assert parse_time(None) is None


def test_durations_read_well() -> None:
    assert duration(timedelta(hours=2, minutes=5)) == "2 h 05 min"
    assert duration(timedelta(minutes=3, seconds=20)) == "3 min 20 s"
    assert duration(timedelta(seconds=-4)) == "0 s"


def test_the_session_s_accelerator_as_its_status_bar_names_it() -> None:
    from aifacility.facility import load_facility
    from aifacility.lifetimes.sessions import accelerator_text

    demo = load_facility()
    assert accelerator_text(demo, "mig-1g-10gb") == "1 x A100 MIG 1g.10gb slice"
    assert accelerator_text(demo, "cpu-small") is None
    assert accelerator_text(demo, "a-profile-removed-since") is None
