"""Global concurrency and rate limits: may this job start now?

A limit has a name and a capacity. A job is under the limit named after
its task, if the broker was started with one (`--limit mod:fetch=4`), and
under the limit named by its `limit_key` option (`customer-7`), whose
capacity is the broker's `--limit customer-7=N` if there is one, else the
job's own `limit` option. A job under no limit never comes here.

A job is admitted when every limit it is under has a free slot; it then
holds one slot in each until it finishes for good, is cancelled, or goes
to wait for a retry (a requeue after its worker was lost keeps its slots:
it goes straight back to the ready queue). Jobs not admitted wait here, in
the broker, in one FIFO per limit, never in a worker's prefetch, and are
admitted in that order as slots free. Because admitted jobs (ready,
leased, running) never outnumber the capacity, neither do running ones.

A rate limit (`--limit NAME=N/60s`) is the same mechanism with another
release rule: a slot is given back a period after it was taken, not when
the job ends, so at most N jobs are admitted in any such period.

Pure: driven by `now`, no I/O. It does not know about queues or workers;
the state moves what `admit`, `release` and `tick` hand back to the ready
queue.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

_SPEC = re.compile(r"^(?P<name>.+)=(?P<n>[0-9]+)(?:/(?P<period>[0-9.]+)(?P<unit>s|m|h)?)?$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class LimitSpec:
    capacity: int
    per_s: float | None = None  # a rate limit: slots come back this long after they were taken


def parse_limit(text: str) -> tuple[str, LimitSpec]:
    """`NAME=N` (N at once) or `NAME=N/PERIOD` (N per PERIOD, e.g. 10/1s, 100/1m).

    Raises:
        ValueError: not of that shape, or N below 1, or a period of 0.
    """
    match = _SPEC.match(text.strip())
    if match is None:
        raise ValueError(f"limit {text!r} is not NAME=N or NAME=N/PERIOD (like mod:fetch=4 or api=10/1s)")
    capacity = int(match["n"])
    if capacity < 1:
        raise ValueError(f"limit {text!r}: N must be at least 1")
    per_s = None
    if match["period"] is not None:
        per_s = float(match["period"]) * _UNIT_S[match["unit"] or "s"]
        if per_s <= 0:
            raise ValueError(f"limit {text!r}: the period must be positive")
    return match["name"], LimitSpec(capacity, per_s)


class Limited(Protocol):
    """What limits need of a job (broker/records.py Job)."""

    gid: int
    task: str
    options: dict[str, Any] | None
    limits: tuple[str, ...] | None


@dataclass
class Limit:
    name: str
    spec: LimitSpec
    configured: bool
    held: int = 0
    waiting: deque[Any] = field(default_factory=deque)
    expiry: list[float] = field(default_factory=list)  # rate limits: when taken slots come back

    @property
    def free(self) -> bool:
        return self.held < self.spec.capacity


class Limits:
    def __init__(self, configured: dict[str, LimitSpec] | None = None) -> None:
        self._limits: dict[str, Limit] = {
            name: Limit(name, spec, configured=True) for name, spec in (configured or {}).items()
        }
        self._waiting = 0
        # The names a task's own limit can have: a job without options is
        # under a limit only if its task is one of them, so every other job
        # (on a broker with limits on other tasks) skips the limits at once.
        self.tasks: frozenset[str] = frozenset(self._limits)

    @property
    def any(self) -> bool:
        """Whether any limit exists (configured, or named by a waiting or running job)."""
        return bool(self._limits)

    def names_for(self, job: Limited) -> tuple[str, ...]:
        """The limits `job` is under (creating a key's limit on first use)."""
        names: tuple[str, ...] = (job.task,) if job.task in self._limits and self._limits[job.task].configured else ()
        options = job.options
        if options:
            key = options.get("limit_key")
            if key is not None and key != job.task:
                limit = self._limits.get(key)
                if limit is None:
                    capacity = options.get("limit")
                    if capacity is None:
                        return names  # a key nobody set a capacity for: no limit
                    limit = self._limits[key] = Limit(key, LimitSpec(int(capacity)), configured=False)
                elif not limit.configured and options.get("limit") is not None:
                    # The submitter names the capacity; the latest one given wins.
                    limit.spec = LimitSpec(int(options["limit"]))
                names += (key,)
        return names

    def admit(self, job: Limited, now: float, front: bool = False) -> bool:
        """True if `job` may go to the ready queue now (it then holds its
        slots in `job.limits`); False: it waits here, at the back of the
        line (or its front: a job handed back, which was first already)."""
        names = self.names_for(job)
        if not names:
            return True
        for name in names:
            limit = self._limits[name]
            self._expire(limit, now)
            if not limit.free or limit.waiting:
                # Wait behind the jobs already waiting, in order.
                if front:
                    limit.waiting.appendleft(job)
                else:
                    limit.waiting.append(job)
                self._waiting += 1
                return False
        self._take(job, names, now)
        return True

    # -- passing a slot on (broker/succession.py) ------------------------------

    def passable(self, names: tuple[str, ...]) -> bool:
        """Whether a job holding exactly these slots may name a successor:
        one limit, of jobs at once (a rate limit's slot is the period's, not
        the job's), not over its capacity (lowered since it was taken)."""
        if len(names) != 1:
            return False
        limit = self._limits.get(names[0])
        return limit is not None and limit.spec.per_s is None and limit.held <= limit.spec.capacity

    def first_waiting(self, name: str) -> Any | None:
        """The job first in `name`'s line, if it waits for that limit alone."""
        limit = self._limits.get(name)
        if limit is None or not limit.waiting:
            return None
        job = limit.waiting[0]
        # Which limits it is under, without `names_for`'s updates: asking
        # must not set a key's capacity back to what this job once said.
        task_limit = self._limits.get(job.task)
        under_task = task_limit is not None and task_limit.configured
        key = job.options.get("limit_key") if job.options else None
        under_key = key is not None and key != job.task and key in self._limits
        names = ((job.task,) if under_task else ()) + ((key,) if under_key else ())
        return job if names == (name,) else None

    def take_first(self, name: str) -> Any:
        """Take the job first in `name`'s line out of it (it becomes the
        successor of a job holding a slot: it holds none itself yet)."""
        self._waiting -= 1
        return self._limits[name].waiting.popleft()

    def release(self, job: Limited, now: float) -> list[Any]:
        """`job` gives its slots back (it finished, was cancelled, or waits
        for a retry); returns the jobs admitted in its place, in order."""
        names = job.limits
        job.limits = None
        if not names:
            return []
        for name in names:
            limit = self._limits.get(name)
            if limit is not None and limit.spec.per_s is None:
                limit.held -= 1
        return self._admit_waiting(names, now)

    def tick(self, now: float) -> list[Any]:
        """Rate-limit slots that came back: the jobs they admit."""
        due = []
        for limit in self._limits.values():
            if limit.expiry and limit.expiry[0] <= now:
                due.append(limit.name)
        return self._admit_waiting(tuple(due), now) if due else []

    def discard(self, gids: set[int]) -> list[Any]:
        """Take cancelled jobs out of the waiting lines; returns them."""
        gone = []
        for limit in self._limits.values():
            if limit.waiting and any(job.gid in gids for job in limit.waiting):
                kept = deque(job for job in limit.waiting if job.gid not in gids)
                gone += [job for job in limit.waiting if job.gid in gids]
                limit.waiting = kept
        self._waiting -= len(gone)
        return gone

    @property
    def waiting(self) -> int:
        return self._waiting

    def waiting_jobs(self) -> list[Any]:
        return [job for limit in self._limits.values() for job in limit.waiting]

    def status(self, now: float) -> dict[str, dict[str, Any]]:
        """Per limit: capacity, period (rate limits), slots held, jobs waiting."""
        out = {}
        for name, limit in self._limits.items():
            self._expire(limit, now)
            out[name] = {
                "limit": limit.spec.capacity, "per_s": limit.spec.per_s,
                "held": limit.held, "waiting": len(limit.waiting),
            }
        return out

    # -- internals -----------------------------------------------------------

    def _take(self, job: Limited, names: tuple[str, ...], now: float) -> None:
        for name in names:
            limit = self._limits[name]
            limit.held += 1
            if limit.spec.per_s is not None:
                heapq.heappush(limit.expiry, now + limit.spec.per_s)
        job.limits = names

    def _expire(self, limit: Limit, now: float) -> None:
        while limit.expiry and limit.expiry[0] <= now:
            heapq.heappop(limit.expiry)
            limit.held -= 1

    def _admit_waiting(self, names: tuple[str, ...], now: float) -> list[Any]:
        """Admit, in order, the waiting jobs of these limits that now fit.

        A job under two limits waits in the line of the first that was full
        when it came; once at the head with a slot free there, it moves to
        the line of the next full one, or is admitted if there is none.
        """
        admitted: list[Any] = []
        pending = list(dict.fromkeys(names))
        while pending:
            name = pending.pop(0)
            limit = self._limits.get(name)
            if limit is None:
                continue
            self._expire(limit, now)
            while limit.waiting and limit.free:
                job = limit.waiting.popleft()
                self._waiting -= 1
                blocked = None
                for other in self.names_for(job):
                    other_limit = self._limits[other]
                    self._expire(other_limit, now)
                    if other != name and (not other_limit.free or other_limit.waiting):
                        blocked = other_limit
                        break
                if blocked is not None:
                    blocked.waiting.append(job)
                    self._waiting += 1
                    continue
                self._take(job, self.names_for(job), now)
                admitted.append(job)
            self._forget_if_idle(limit)
        return admitted

    def _forget_if_idle(self, limit: Limit) -> None:
        # Keys named only by jobs come and go (one per customer): drop a
        # key's limit once nothing holds or waits on it.
        if not limit.configured and not limit.held and not limit.waiting and not limit.expiry:
            del self._limits[limit.name]
