"""How much one session, and all of them, may have queued: the broker's quotas.

Pure bookkeeping, driven by `BrokerState`: a job counts from the moment it
is accepted until it is done for good (succeeded, or failed with no retry
left), whether it waits, runs or waits for a retry. A submit past a limit
is refused job by job with `BrokerFull`; nothing already accepted is ever
touched, so a full broker slows its clients down and loses nothing.

A job's cost in bytes is what it cost on the wire (its share of the submit
frame it came in, or its stored size after a restart) plus a fixed
overhead for what the broker keeps per job however small it is, so the
byte limit bounds memory as well as the store.
"""

from __future__ import annotations

from typing import Any

from sockpool.protocol.messages import error_value

E_BROKER_FULL = "BrokerFull"
# What the broker keeps per queued job beyond its arguments: its record,
# its queue entry, its session's index, its task name.
JOB_OVERHEAD_BYTES = 512


_UNLIMITED = 1 << 62


class Quota:
    """Limits of 0 mean none."""

    def __init__(
        self, max_jobs: int = 0, max_bytes: int = 0, max_session_jobs: int = 0, max_session_bytes: int = 0
    ) -> None:
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.max_session_jobs = max_session_jobs
        self.max_session_bytes = max_session_bytes
        self.jobs = 0
        self.bytes = 0
        self._by_session: dict[str, list[int]] = {}  # session -> [jobs, bytes]

    def refusal(self, session: str, cost: int, pending: int = 0) -> dict[str, Any] | None:
        """The `BrokerFull` error for one more job of `cost` bytes, after
        `pending` such jobs not yet added, or None if it fits."""
        mine = self._by_session.get(session, (0, 0))
        for limit, used, add, what, option in (
            (self.max_jobs, self.jobs + pending, 1, "queued jobs", "--max-queued-jobs"),
            (self.max_bytes, self.bytes + pending * cost, cost, "bytes of queued jobs", "--max-store-bytes"),
            (self.max_session_jobs, mine[0] + pending, 1, "queued jobs for this session", "--max-session-jobs"),
            (self.max_session_bytes, mine[1] + pending * cost, cost, "bytes of queued jobs for this session",
             "--max-session-bytes"),
        ):
            if limit and used + add > limit:
                return error_value(
                    E_BROKER_FULL,
                    f"broker full: it holds {used} {what}, its limit is {limit} ({option}); "
                    "nothing accepted is lost: submit again once jobs have finished",
                )
        return None

    def room(self, session: str, cost: int) -> int:
        """How many more jobs of `cost` bytes this session may queue now;
        a submit asks once, not per job."""
        mine = self._by_session.get(session, (0, 0))
        room = _UNLIMITED
        if self.max_jobs:
            room = min(room, self.max_jobs - self.jobs)
        if self.max_bytes:
            room = min(room, (self.max_bytes - self.bytes) // cost)
        if self.max_session_jobs:
            room = min(room, self.max_session_jobs - mine[0])
        if self.max_session_bytes:
            room = min(room, (self.max_session_bytes - mine[1]) // cost)
        return max(0, room)

    def add(self, session: str, cost: int, count: int = 1) -> None:
        self.jobs += count
        self.bytes += cost * count
        mine = self._by_session.setdefault(session, [0, 0])
        mine[0] += count
        mine[1] += cost * count

    def add_total(self, session: str, jobs: int, total: int) -> None:
        """`jobs` jobs of `total` bytes in all (a restore: sizes differ)."""
        self.jobs += jobs
        self.bytes += total
        mine = self._by_session.setdefault(session, [0, 0])
        mine[0] += jobs
        mine[1] += total

    def remove(self, session: str, cost: int) -> None:
        self.jobs -= 1
        self.bytes -= cost
        mine = self._by_session.get(session)
        if mine is not None:
            mine[0] -= 1
            mine[1] -= cost
            if mine[0] <= 0:
                del self._by_session[session]

    def remove_many(self, session: str, count: int, total: int) -> None:
        """`remove` for `count` jobs of one session, `total` bytes in all
        (the successes of one results frame: one call, not one a job)."""
        self.jobs -= count
        self.bytes -= total
        mine = self._by_session.get(session)
        if mine is not None:
            mine[0] -= count
            mine[1] -= total
            if mine[0] <= 0:
                del self._by_session[session]
