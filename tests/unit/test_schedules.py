"""broker/schedules.py: when cron schedules fire, driven by `now` (no sleeps)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sockpool.broker.schedules import MISSED_AFTER_S, Schedule, Schedules, check_cron

PARIS = "Europe/Paris"


def at(*fields: int, tz: str = PARIS) -> float:
    return datetime(*fields, tzinfo=ZoneInfo(tz)).timestamp()


def local(t: float, tz: str = PARIS) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(tz)).strftime("%m-%d %H:%M %z")


def schedule(cron: str, tz: str = PARIS, missed: str = "once", name: str = "s") -> Schedule:
    return Schedule(name, cron, tz, "tests.tasks:add", [1, 2], {}, {}, missed=missed)


def fire_over(schedules: Schedules, start: float, end: float, step_s: float = 60.0) -> list[float]:
    """Every firing enqueued when the broker ticks each `step_s` from start to end."""
    fired = []
    t = start
    while t <= end:
        fired += [f.fire_time for f in schedules.due(t) if f.enqueue]
        t += step_s
    return fired


def test_fires_once_per_fire_time():
    s = Schedules()
    s.add(schedule("*/5 * * * *", "UTC"), now=at(2026, 1, 1, 0, 1, tz="UTC"))
    fired = fire_over(s, at(2026, 1, 1, 0, 1, tz="UTC"), at(2026, 1, 1, 0, 31, tz="UTC"), step_s=7)
    assert [local(t, "UTC") for t in fired] == [f"01-01 00:{m:02d} +0000" for m in (5, 10, 15, 20, 25, 30)]


def test_nothing_fires_before_its_time():
    s = Schedules()
    s.add(schedule("0 12 * * *"), now=at(2026, 6, 1, 11, 0))
    assert s.due(at(2026, 6, 1, 11, 59, 59)) == []
    assert s.next_due() == at(2026, 6, 1, 12, 0)
    [firing] = s.due(at(2026, 6, 1, 12, 0))
    assert firing.fire_time == at(2026, 6, 1, 12, 0) and firing.enqueue


def test_spring_forward_a_skipped_time_fires_right_after_the_jump():
    s = Schedules()
    s.add(schedule("30 2 * * *"), now=at(2026, 3, 28, 12, 0))
    fired = fire_over(s, at(2026, 3, 28, 12, 0), at(2026, 3, 30, 12, 0))
    # 02:30 does not exist on 29 March in Paris: the job runs at 03:00 CEST, once.
    assert [local(t) for t in fired] == ["03-29 03:00 +0200", "03-30 02:30 +0200"]


def test_fall_back_a_repeated_time_fires_once():
    s = Schedules()
    s.add(schedule("30 2 * * *"), now=at(2026, 10, 24, 12, 0))
    fired = fire_over(s, at(2026, 10, 24, 12, 0), at(2026, 10, 26, 12, 0))
    # 02:30 happens twice on 25 October (CEST, then CET): one run.
    assert [local(t) for t in fired] == ["10-25 02:30 +0200", "10-26 02:30 +0100"]


def test_hourly_jobs_follow_real_hours_across_fall_back():
    s = Schedules()
    s.add(schedule("0 * * * *"), now=at(2026, 10, 25, 0, 30))
    fired = fire_over(s, at(2026, 10, 25, 0, 30), at(2026, 10, 25, 4, 30, tz="UTC"))
    gaps = {b - a for a, b in zip(fired, fired[1:])}
    assert gaps == {3600.0}  # the repeated 02:00 hour runs too: every real hour


@pytest.mark.parametrize("missed, expected", [("once", 1), ("skip", 0)])
def test_missed_firings_run_once_or_are_skipped(missed, expected):
    s = Schedules()
    s.add(schedule("*/5 * * * *", "UTC", missed=missed), now=at(2026, 1, 1, 0, 0, tz="UTC"))
    # The broker was down from 00:01 to 01:00: eleven firings missed.
    firings = s.due(at(2026, 1, 1, 1, 0, 30, tz="UTC") + MISSED_AFTER_S)
    assert len(firings) == 1  # never one per missed time
    assert sum(f.enqueue for f in firings) == expected
    assert local(firings[0].fire_time, "UTC") == "01-01 01:00 +0000"
    assert s.due(at(2026, 1, 1, 1, 2, tz="UTC")) == []  # and nothing again for 01:00


def test_a_late_but_not_missed_firing_runs_even_with_skip():
    s = Schedules()
    s.add(schedule("0 * * * *", "UTC", missed="skip"), now=at(2026, 1, 1, 0, 30, tz="UTC"))
    [firing] = s.due(at(2026, 1, 1, 1, 0, 20, tz="UTC"))
    assert firing.enqueue


def test_a_restored_schedule_resumes_after_its_last_firing():
    s = Schedules()
    s.add(schedule("*/5 * * * *", "UTC"), now=at(2026, 1, 1, 0, 0, tz="UTC"))
    [firing] = s.due(at(2026, 1, 1, 0, 5, tz="UTC"))
    record = s.by_name["s"].record()  # what the store kept with that firing
    again = Schedules()
    again.restore(Schedule.from_record(record))
    assert again.due(at(2026, 1, 1, 0, 5, 1, tz="UTC")) == []  # 00:05 is not fired twice
    [next_one] = again.due(at(2026, 1, 1, 0, 10, tz="UTC"))
    assert next_one.fire_time == firing.fire_time + 300


def test_a_paused_schedule_owes_nothing_for_its_pause():
    s = Schedules()
    s.add(schedule("*/5 * * * *", "UTC"), now=at(2026, 1, 1, 0, 0, tz="UTC"))
    s.set_paused("s", True, at(2026, 1, 1, 0, 1, tz="UTC"))
    assert s.due(at(2026, 1, 1, 0, 30, tz="UTC")) == [] and s.next_due() is None
    s.set_paused("s", False, at(2026, 1, 1, 0, 31, tz="UTC"))
    assert s.due(at(2026, 1, 1, 0, 34, tz="UTC")) == []
    [firing] = s.due(at(2026, 1, 1, 0, 35, tz="UTC"))
    assert local(firing.fire_time, "UTC") == "01-01 00:35 +0000"


def test_bad_expressions_and_zones_are_refused():
    for cron, tz in (("61 * * * *", "UTC"), ("* * *", "UTC"), ("0 0 31 2 *", "UTC"), ("* * * * *", "Mars/Olympus")):
        with pytest.raises(ValueError):
            check_cron(cron, tz)
    check_cron("*/5 * * * *", "America/New_York")
