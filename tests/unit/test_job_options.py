"""client/api.py `job_options` and the submit CLI's --delay/--at parsing: checked before anything is sent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sockpool.client.api import job_options
from sockpool.client.cli import parse_duration, parse_time


def test_defaults_add_nothing_to_the_wire():
    assert job_options(0, None, queue="default", priority=0, delay=0) == {}


def test_delay_takes_seconds_or_a_timedelta_and_at_an_aware_datetime():
    assert job_options(0, None, delay=30)["delay"] == 30.0
    assert job_options(0, None, delay=timedelta(days=30))["delay"] == 30 * 86400.0
    when = datetime(2026, 12, 24, 18, tzinfo=timezone.utc)
    assert job_options(0, None, at=when)["at"] == when.timestamp()
    assert job_options(0, None, at=1.5e9)["at"] == 1.5e9
    assert job_options(0, None, queue="gpu", priority=9) == {"queue": "gpu", "priority": 9}


@pytest.mark.parametrize("kwargs", [
    {"queue": "a b"}, {"queue": ""}, {"priority": 1001}, {"priority": 2.0}, {"delay": -1},
    {"delay": float("nan")}, {"delay": timedelta(seconds=-1)}, {"at": datetime(2026, 12, 24, 18)},
    {"at": float("inf")},
])
def test_bad_options_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        job_options(0, None, **kwargs)


def test_durations_and_times_on_the_command_line():
    assert [parse_duration(t) for t in ("30s", "5m", "2h", "1d", "250ms", "1.5", " 10 s ")] == [
        30.0, 300.0, 7200.0, 86400.0, 0.25, 1.5, 10.0]
    assert parse_time("2026-12-24T18:00:00Z") == datetime(2026, 12, 24, 18, tzinfo=timezone.utc)
    assert parse_time("2026-12-24T19:00:00+01:00").timestamp() == parse_time("2026-12-24T18:00:00Z").timestamp()
    for bad in ("soon", "-5s", "1w"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("2026-12-24T18:00:00", "tomorrow"):
        with pytest.raises(ValueError):
            parse_time(bad)
