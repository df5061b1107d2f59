"""Periodic jobs: cron schedules kept by the broker, and when each fires. No I/O.

`Schedules` holds the schedules and answers, for a `now`, which firings
are due; `BrokerState` turns each into a job and journals the job together
with the firing, in one transaction, so a firing is enqueued exactly once
whatever happens to the broker: it is keyed by (schedule, fire time), and
after a restart the schedule resumes from the last firing the store holds.

Cron expressions and their time-zone arithmetic come from `cronsim` (the
Debian cron semantics, DST included: a time skipped by a spring-forward
fires right after the jump, a time repeated by a fall-back fires once),
over the stdlib's `zoneinfo`. Nothing here parses cron by hand.

Rules:
1. A schedule owes the fire times after `since`: when it was added or
   resumed, or its last firing.
2. A firing is due once its time has come. If it is more than MISSED_AFTER_S
   late (the broker was down, or the schedule's queue paused everything),
   the schedule's `missed` policy decides: "once" (the default) enqueues
   one job for the latest missed time, however many were missed; "skip"
   enqueues nothing and waits for the next time.
3. A paused schedule owes nothing: resuming it starts from the resume time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MISSED_POLICIES = ("once", "skip")
DEFAULT_MISSED = "once"
# A firing later than this is a missed one (rule 2); on a running broker a
# firing is at most a tick late.
MISSED_AFTER_S = 60.0
# Jobs of a schedule belong to this session, one per schedule: the fire
# time is the job's id within it. Clients may not use such a session.
SESSION_PREFIX = "@schedule/"
MAX_SCHEDULE_NAME_CHARS = 128
MAX_CRON_CHARS = 256
MAX_ZONE_NAME_CHARS = 64
MAX_SCHEDULES = 1000


@dataclass
class Schedule:
    name: str
    cron: str
    timezone: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]  # the job options of each firing (queue, priority)
    missed: str = DEFAULT_MISSED
    paused: bool = False
    since: float = 0.0  # rule 1
    last_outcome: dict[str, Any] | None = None
    next_fire: float | None = field(default=None, compare=False)

    @property
    def session(self) -> str:
        return SESSION_PREFIX + self.name

    def record(self) -> dict[str, Any]:
        """What the store keeps (and `schedule list` shows, with `next_fire`)."""
        return {
            "name": self.name, "cron": self.cron, "timezone": self.timezone, "task": self.task,
            "args": self.args, "kwargs": self.kwargs, "options": self.options, "missed": self.missed,
            "paused": self.paused, "since": self.since, "last_outcome": self.last_outcome,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Schedule:
        return cls(**record)


def zone(name: str) -> ZoneInfo:
    """Raises ValueError for an unknown time zone."""
    if len(name) > MAX_ZONE_NAME_CHARS:
        raise ValueError("time zone name too long")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def check_cron(cron: str, tz: str) -> None:
    """Raises ValueError unless `cron` is a valid expression (5 fields, or 6
    with seconds first) and `tz` a known IANA zone."""
    if len(cron) > MAX_CRON_CHARS:
        raise ValueError("cron expression too long")
    try:
        CronSim(cron, datetime.now(zone(tz)))
    except CronSimError as exc:
        raise ValueError(f"bad cron expression {cron!r}: {exc}") from exc


def next_fire_after(cron: str, tz: str, t: float) -> float | None:
    """The first fire time strictly after Unix time `t`."""
    start = datetime.fromtimestamp(math.floor(t), zone(tz))
    try:
        return next(CronSim(cron, start)).timestamp()
    except StopIteration:
        return None


def last_fire_at_or_before(cron: str, tz: str, t: float) -> float | None:
    """The latest fire time at or before Unix time `t`."""
    # cronsim's reverse walk counts a start with microseconds, stripped, as
    # its first candidate: so floor(t) itself can match.
    start = datetime.fromtimestamp(math.floor(t), zone(tz)) + timedelta(microseconds=1)
    try:
        return next(CronSim(cron, start, reverse=True)).timestamp()
    except StopIteration:
        return None


def latest_fire(cron: str, tz: str, since: float, now: float) -> float | None:
    """The latest fire time after `since` and at or before `now`, if any.

    A reverse walk finds it in one step however long ago `since` was (a
    broker down for a month does not iterate a month of minutes); the
    forward steps after it correct the reverse walk, which across a
    fall-back can land one repeated hour early.
    """
    reverse = last_fire_at_or_before(cron, tz, now)
    t = since if reverse is None or reverse <= since else max(since, reverse - 1)
    latest = None
    while (following := next_fire_after(cron, tz, t)) is not None and following <= now:
        latest = t = following
    return latest


@dataclass
class Firing:
    schedule: Schedule
    fire_time: float
    enqueue: bool  # False: missed and skipped (rule 2)


class Schedules:
    def __init__(self) -> None:
        self.by_name: dict[str, Schedule] = {}

    def __len__(self) -> int:
        return len(self.by_name)

    def add(self, schedule: Schedule, now: float) -> None:
        """Add or replace a schedule; it owes fire times from `now` on."""
        schedule.since = now
        self.by_name[schedule.name] = schedule
        self._plan(schedule)

    def restore(self, schedule: Schedule) -> None:
        self.by_name[schedule.name] = schedule
        self._plan(schedule)

    def remove(self, name: str) -> Schedule | None:
        return self.by_name.pop(name, None)

    def set_paused(self, name: str, paused: bool, now: float) -> Schedule | None:
        schedule = self.by_name.get(name)
        if schedule is None:
            return None
        if schedule.paused and not paused:
            schedule.since = max(schedule.since, now)  # rule 3
        schedule.paused = paused
        self._plan(schedule)
        return schedule

    def next_due(self) -> float | None:
        times = [s.next_fire for s in self.by_name.values() if s.next_fire is not None and not s.paused]
        return min(times, default=None)

    def due(self, now: float) -> list[Firing]:
        """The firings due at `now` (rule 2); each schedule moves past them."""
        firings: list[Firing] = []
        for schedule in self.by_name.values():
            if schedule.paused or schedule.next_fire is None or schedule.next_fire > now:
                continue
            latest = latest_fire(schedule.cron, schedule.timezone, schedule.since, now)
            if latest is None:
                self._plan(schedule)
                continue
            late = now - latest > MISSED_AFTER_S
            firings.append(Firing(schedule, latest, enqueue=not late or schedule.missed == "once"))
            schedule.since = latest
            self._plan(schedule)
        return firings

    def _plan(self, schedule: Schedule) -> None:
        schedule.next_fire = None if schedule.paused else next_fire_after(
            schedule.cron, schedule.timezone, schedule.since
        )


def fire_time_text(t: float | None) -> str:
    """A Unix time as ISO 8601 UTC, for status and logs."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
