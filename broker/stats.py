"""What the broker counts for `broker status`, /metrics and the dashboard.

Pure bookkeeping like `state.py`: no I/O, no threads, no clock. The state
calls in as jobs are submitted and finish, passing `now`, and asks for a
plain dict (msgpack- and JSON-ready) when someone wants to look.

Counts are in calls, the unit a user submits: a `submit` is one call, a
map chunk of N items is N calls. A call is completed or failed once, when
its job is done for good; a failure that will be retried is counted by the
state as a retry. Latencies are per run of a job (a chunk is one job):
queue wait runs from entering the ready queue to dispatch, run time from
dispatch to the result reaching the broker, so it includes the trip to
the worker and back.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from typing import Any, Sequence

from sockpool.protocol.defaults import MAX_TRACKED_TASKS, RECENT_FAILURES, STATUS_HISTORY_S, THROUGHPUT_WINDOW_S

# From half a millisecond (a tiny job on an idle cluster) to five minutes.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# The name per-task counts fall under once MAX_TRACKED_TASKS names are known.
OTHER_TASKS = "(other)"
# `to_dict(viewer=EVERYONE)`: every failure's message is shown (the operator).
EVERYONE = "\0everyone"
# Error text kept per recent failure: enough to recognise it, bounded.
_MESSAGE_CHARS = 500
_TRACEBACK_CHARS = 4000


class LatencyHistogram:
    """Observations counted into fixed buckets, as a Prometheus histogram is."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.observe_many((seconds,))

    def observe_many(self, values: Sequence[float]) -> None:
        """`observe` each of `values`: one call for a frame of results, not
        one (and a `max`) per job; the histograms were a sixth of the
        broker's CPU per result."""
        counts, bounds, total = self.counts, self.bounds, 0.0
        for seconds in values:
            if seconds < 0.0:
                seconds = 0.0
            # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
            counts[bisect_left(bounds, seconds)] += 1
            total += seconds
        self.sum += total
        self.count += len(values)

    def to_dict(self) -> dict[str, Any]:
        """Cumulative buckets as `[[upper_bound, count], ...]`, the last bound "+Inf"."""
        buckets: list[list[Any]] = []
        total = 0
        for bound, count in zip([*self.bounds, "+Inf"], self.counts):
            total += count
            buckets.append([bound, total])
        return {"buckets": buckets, "sum": self.sum, "count": self.count}


class Throughput:
    """Completed calls per second, as a ring of per-second counts."""

    def __init__(self, history_s: int = STATUS_HISTORY_S) -> None:
        self.history_s = history_s
        self._seconds: deque[list[int]] = deque()  # [second, calls], oldest first

    def add(self, now: float, calls: int) -> None:
        second = math.floor(now)
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            seconds[-1][1] += calls  # the running second: what fell out went when it began
            return
        seconds.append([second, calls])
        while seconds[0][0] <= second - self.history_s:
            seconds.popleft()

    def history(self, now: float) -> list[int]:
        """Calls completed in each of the last `history_s` seconds, oldest first;
        the last entry is the second now running."""
        first = math.floor(now) - self.history_s + 1
        counts = [0] * self.history_s
        for second, calls in self._seconds:
            if first <= second < first + self.history_s:
                counts[second - first] = calls
        return counts

    def rate(self, now: float, window_s: int = THROUGHPUT_WINDOW_S) -> float:
        """Calls per second over the last `window_s` whole seconds (the running
        second is left out: it would read low until it ends)."""
        current = math.floor(now)
        calls = sum(c for second, c in self._seconds if current - window_s <= second < current)
        return calls / window_s


class BrokerStats:
    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.refused = 0
        self.tasks: dict[str, list[int]] = {}  # task -> [submitted, completed, failed]
        self.queue_wait = LatencyHistogram()
        self.run_time = LatencyHistogram()
        self.throughput = Throughput()
        # Completed calls per queue (capped like `tasks`), sampled once a
        # second by `sample_queues` for a rate: a dict increment per job,
        # not a second Throughput.
        self.queue_done: dict[str, int] = {}
        self._queue_samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=THROUGHPUT_WINDOW_S + 2)
        self.recent_failures: deque[dict[str, Any]] = deque(maxlen=RECENT_FAILURES)

    def on_submitted(self, task: str, calls: int) -> None:
        self.submitted += calls
        self._task(task)[0] += calls

    def on_refused(self, task: str, error: dict[str, Any], now: float, session: str = "") -> None:
        # Not per task: a refused name is whatever the client typed.
        self.refused += 1
        self.remember_failure(task, "", error, now, session=session)

    def on_ran(self, calls: int, ok: bool, value: Any, wait_s: float, run_s: float) -> int:
        """A worker sent a job's result (perhaps one to be retried): time it;
        returns how many of its calls failed."""
        self.queue_wait.observe(wait_s)
        self.run_time.observe(run_s)
        return 0 if ok else failed_calls(value, calls)

    def on_ran_ok(self, waits: Sequence[float], runs: Sequence[float]) -> None:
        """Jobs of one results frame that succeeded: their queue waits and
        run times (`on_ran` for each, in one call)."""
        self.queue_wait.observe_many(waits)
        self.run_time.observe_many(runs)

    def on_finished(self, task: str, calls: int, ok: bool, value: Any, now: float, queue: str = "default") -> None:
        """A job is done for good: it succeeded, or failed with no retry left."""
        done = self.queue_done
        if queue not in done and len(done) >= MAX_TRACKED_TASKS:
            queue = OTHER_TASKS
        done[queue] = done.get(queue, 0) + calls
        failed = 0 if ok else failed_calls(value, calls)
        counts = self._task(task)
        counts[1] += calls - failed
        counts[2] += failed
        self.completed += calls - failed
        self.failed += failed
        self.throughput.add(now, calls)

    def on_succeeded(self, calls_by_task: dict[str, int], now: float, queue: str) -> None:
        """`on_finished` for jobs of one queue that succeeded, in one go."""
        calls = sum(calls_by_task.values())
        done = self.queue_done
        if queue not in done and len(done) >= MAX_TRACKED_TASKS:
            queue = OTHER_TASKS
        done[queue] = done.get(queue, 0) + calls
        for task, n in calls_by_task.items():
            self._task(task)[1] += n
        self.completed += calls
        self.throughput.add(now, calls)

    def sample_queues(self, now: float) -> None:
        """Note the per-queue counts, at most once a second (from the ticker)."""
        if not self._queue_samples or now - self._queue_samples[-1][0] >= 1.0:
            self._queue_samples.append((now, dict(self.queue_done)))

    def queue_rates(self, now: float) -> dict[str, float]:
        """Completed calls per second per queue, over about THROUGHPUT_WINDOW_S."""
        start = next(((t, counts) for t, counts in self._queue_samples if t >= now - THROUGHPUT_WINDOW_S - 0.5), None)
        if start is None or now - start[0] < 0.5:
            return {}
        elapsed = now - start[0]
        return {q: (n - start[1].get(q, 0)) / elapsed for q, n in self.queue_done.items()}

    def _task(self, task: str) -> list[int]:
        counts = self.tasks.get(task)
        if counts is None:
            if len(self.tasks) >= MAX_TRACKED_TASKS:
                task = OTHER_TASKS
            counts = self.tasks.setdefault(task, [0, 0, 0])
        return counts

    def remember_failure(
        self, task: str, worker: str, error: Any, now: float, retrying: bool = False, session: str = ""
    ) -> None:
        """Keep an error for the dashboard (the newest RECENT_FAILURES of them).

        `session` is whose job it was: its message and traceback, which may
        quote the job's arguments, are shown to that session and the
        operator only (see `to_dict`).
        """
        if not isinstance(error, dict):
            error = {"message": error}
        self.recent_failures.append({
            "session": session,
            "task": task,
            "worker": worker,
            "type": str(error.get("type", "Error")),
            "message": str(error.get("message", ""))[:_MESSAGE_CHARS],
            "traceback": str(error.get("traceback", ""))[-_TRACEBACK_CHARS:],
            "retrying": retrying,
            "at": now,
        })

    def to_dict(self, now: float, viewer: str | None = EVERYONE) -> dict[str, Any]:
        """The counts as a plain dict. `viewer` is whose failure messages to
        show: EVERYONE's (the operator), None's (the unauthenticated HTTP
        port), or one session's. Others' failures show type, task, worker
        and age only. Session IDs are never shown: each is a capability."""
        return {
            "totals": {
                "submitted": self.submitted,
                "completed": self.completed,
                "failed": self.failed,
                "refused": self.refused,
            },
            "throughput": {
                "window_s": THROUGHPUT_WINDOW_S,
                "per_s": self.throughput.rate(now),
                "history": self.throughput.history(now),
            },
            "tasks": {
                task: {"submitted": s, "completed": c, "failed": f} for task, (s, c, f) in sorted(self.tasks.items())
            },
            "latency": {"queue_wait": self.queue_wait.to_dict(), "run": self.run_time.to_dict()},
            # Newest first, with an age instead of a timestamp.
            "recent_failures": [_shown(f, now, viewer) for f in reversed(self.recent_failures)],
        }


def _shown(failure: dict[str, Any], now: float, viewer: str | None) -> dict[str, Any]:
    visible = viewer is EVERYONE or (viewer is not None and viewer == failure["session"])
    hidden = ("at", "session") if visible else ("at", "session", "message", "traceback")
    return {**{k: v for k, v in failure.items() if k not in hidden}, "age_s": now - failure["at"]}


def failed_calls(value: Any, calls: int) -> int:
    """How many calls of a failed job failed. A map chunk's error says item
    by item (`items`, see worker/runner.py); any other failure took them all."""
    items = value.get("items") if isinstance(value, dict) else None
    if isinstance(items, list) and len(items) == calls:
        return sum(1 for item in items if not (isinstance(item, list) and item and item[0] is True))
    return calls
