"""Who runs next: queues, priorities, fair share, due times, pauses. No I/O.

`Dispatcher` holds every job that is ready to run and decides, for a
worker with room, which of them it gets. `DueJobs` holds the jobs that may
not run yet (delayed jobs and retries waiting out their backoff) until
their time. Both are pure and driven by `now`; `BrokerState` calls them
and does the leasing, journalling and sending.

Rules:
1. A job waits in exactly one queue (its `queue` option, "default" when
   none). A worker takes jobs only from the queues it listens on, and only
   of tasks it serves. Its queues are in strict order of preference: it
   takes from its second queue only what its first cannot give it.
2. Within a queue, higher priority first: no job of a lower priority is
   handed out while a job of a higher one that this worker can run waits.
3. Within a queue and a priority, the sessions (clients) with jobs waiting
   take turns, one job each, round robin: a client's first job goes out
   within one turn of the others, whatever they have queued.
4. Within one session, jobs of a task leave in the order they came (FIFO);
   a job handed back unstarted goes to the front of its session's line.
5. Nothing starves for ever: a priority level that has had jobs waiting
   and handed out none for PRIORITY_AGING_S gets the next job its queue
   hands out, ahead of higher priorities (one job per PRIORITY_AGING_S).
6. A paused queue keeps its jobs and hands out none.
7. `admit(job)`, when set, is asked before a job is handed out; a job it
   refuses stays at the front of its line, and that line is passed over
   for this take (the seam for concurrency limits: see `Admission`).

Cost: a job with no queue, priority or delay goes through one dict lookup
per level and a deque append and pop, as before queues existed.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from typing import Callable, Iterable, Iterator

from .records import Job

# How long a priority level may have jobs waiting and hand out none before
# it gets the next job of its queue (rule 5).
PRIORITY_AGING_S = 5.0

# Rule 7's hook: may this job start now?
Admission = Callable[[Job], bool]


class Level:
    """The jobs of one priority in one queue, in one line per session and task."""

    __slots__ = ("priority", "lines", "turns", "count", "served_at")

    def __init__(self, priority: int, now: float) -> None:
        self.priority = priority
        self.lines: dict[str, dict[str, deque[Job]]] = {}  # session -> task -> jobs
        self.turns: deque[str] = deque()  # sessions with jobs; the next to be served first
        self.count = 0
        # When it last handed out a job, or when it got its first job: rule 5.
        self.served_at = now


class Queue:
    """One named queue: its priority levels and counts."""

    __slots__ = ("name", "levels", "order", "by_task", "count", "calls")

    def __init__(self, name: str) -> None:
        self.name = name
        self.levels: dict[int, Level] = {}
        self.order: list[int] = []  # negated priorities, ascending: highest priority first
        self.by_task: dict[str, int] = {}  # ready jobs per task, for sharing between workers
        self.count = 0
        self.calls = 0

    def oldest_queued_at(self) -> float | None:
        """When the job waiting longest entered the queue (heads of lines only)."""
        heads = [line[0].queued_at for level in self.levels.values() for lines in level.lines.values()
                 for line in lines.values()]
        return min(heads, default=None)


class Dispatcher:
    def __init__(self, admit: Admission | None = None) -> None:
        self.queues: dict[str, Queue] = {}
        self.paused: set[str] = set()
        self.admit = admit
        self.count = 0  # ready jobs, all queues
        self.calls = 0
        self.by_task: dict[str, int] = {}  # ready jobs per task, all queues

    # -- adding and removing ------------------------------------------------

    def add(self, job: Job, now: float, front: bool = False) -> None:
        """Make `job` ready: at the back of its session's line, or the front."""
        queue = self.queues.get(job.queue)
        if queue is None:
            queue = self.queues[job.queue] = Queue(job.queue)
        level = queue.levels.get(job.priority)
        if level is None:
            level = queue.levels[job.priority] = Level(job.priority, now)
            bisect.insort(queue.order, -job.priority)
        lines = level.lines.get(job.session)
        if lines is None:
            lines = level.lines[job.session] = {}
            if front:
                level.turns.appendleft(job.session)
            else:
                level.turns.append(job.session)
        line = lines.get(job.task)
        if line is None:
            line = lines[job.task] = deque()
        if front:
            line.appendleft(job)
        else:
            line.append(job)
        level.count += 1
        queue.count += 1
        queue.calls += job.calls
        queue.by_task[job.task] = queue.by_task.get(job.task, 0) + 1
        self.by_task[job.task] = self.by_task.get(job.task, 0) + 1
        self.count += 1
        self.calls += job.calls

    def add_many(self, jobs: list[Job], now: float) -> None:
        """`add` each job in order; a run of jobs for one line (the usual
        submit batch: one session, task, queue and priority) goes in at once."""
        start = 0
        while start < len(jobs):
            first = jobs[start]
            end = start + 1
            key = (first.queue, first.priority, first.session, first.task)
            while end < len(jobs) and (jobs[end].queue, jobs[end].priority, jobs[end].session, jobs[end].task) == key:
                end += 1
            if end - start == 1:
                self.add(first, now)
            else:
                self._add_run(jobs[start:end], now)
            start = end

    def add_run(self, run: list[Job], now: float) -> None:
        """`add` each job of a run of one line (one queue, priority,
        session and task), in order, at once (a restore's many jobs)."""
        if len(run) == 1:
            self.add(run[0], now)
        elif run:
            self._add_run(run, now)

    def _add_run(self, run: list[Job], now: float) -> None:
        first = run[0]
        self.add(first, now)  # makes the queue, level and line as needed
        rest = run[1:]
        queue = self.queues[first.queue]
        level = queue.levels[first.priority]
        level.lines[first.session][first.task].extend(rest)
        n = len(rest)
        calls = sum(job.calls for job in rest)
        level.count += n
        queue.count += n
        queue.calls += calls
        queue.by_task[first.task] += n
        self.by_task[first.task] += n
        self.count += n
        self.calls += calls

    def remove(self, job: Job) -> bool:
        """Take a ready job out (a cancellation); False if it is not ready."""
        queue = self.queues.get(job.queue)
        level = queue.levels.get(job.priority) if queue else None
        lines = level.lines.get(job.session) if level else None
        line = lines.get(job.task) if lines else None
        if queue is None or level is None or lines is None or line is None or job not in line:
            return False
        line.remove(job)
        self._taken(queue, level, job.session, lines, job.task, line, [job])
        if job.session not in level.lines and job.session in level.turns:
            level.turns.remove(job.session)
        return True

    def remove_many(self, gids: set[int]) -> int:
        """Take the ready jobs with these ids out (a cancellation): one pass
        over the lines, however many go. Returns how many were ready."""
        removed = 0
        for queue in list(self.queues.values()):
            for level in list(queue.levels.values()):
                for session, lines in list(level.lines.items()):
                    for task, line in list(lines.items()):
                        gone = [job for job in line if job.gid in gids]
                        if not gone:
                            continue
                        kept = [job for job in line if job.gid not in gids]
                        line.clear()
                        line.extend(kept)
                        self._taken(queue, level, session, lines, task, line, gone)
                        removed += len(gone)
                    if session not in level.lines and session in level.turns:
                        level.turns.remove(session)
        return removed

    def take_task(self, task: str) -> list[Job]:
        """Take every ready job of `task` out, in every queue (they fail:
        no worker came for the task)."""
        taken: list[Job] = []
        for queue in list(self.queues.values()):
            for level in list(queue.levels.values()):
                for session, lines in list(level.lines.items()):
                    line = lines.get(task)
                    if line:
                        jobs = list(line)
                        line.clear()
                        self._taken(queue, level, session, lines, task, line, jobs)
                        if session not in level.lines and session in level.turns:
                            level.turns.remove(session)
                        taken.extend(jobs)
        return taken

    def sessions_with_task(self, task: str) -> set[str]:
        """The sessions with ready jobs of `task`."""
        return {session for queue in self.queues.values() for level in queue.levels.values()
                for session, lines in level.lines.items() if task in lines}

    # -- pausing ---------------------------------------------------------------

    def pause(self, queue: str) -> None:
        self.paused.add(queue)

    def resume(self, queue: str) -> None:
        self.paused.discard(queue)

    # -- taking ----------------------------------------------------------------

    def waiting_for(self, queues: Iterable[str], tasks: frozenset[str]) -> int:
        """Ready jobs a worker listening on `queues` and serving `tasks` could take."""
        waiting = 0
        for name in queues:
            queue = self.queues.get(name)
            if queue is None or name in self.paused:
                continue
            by_task = queue.by_task
            if len(by_task) <= len(tasks):
                waiting += sum(n for task, n in by_task.items() if task in tasks)
            else:
                waiting += sum(by_task.get(task, 0) for task in tasks)
        return waiting

    def runnable_tasks(self, queues: Iterable[str], tasks: frozenset[str]) -> set[str]:
        """The tasks of ready jobs such a worker could take."""
        found: set[str] = set()
        for name in queues:
            queue = self.queues.get(name)
            if queue is not None and name not in self.paused:
                found.update(task for task in queue.by_task if task in tasks)
        return found

    def take(self, queues: Iterable[str], tasks: frozenset[str], limit: int, now: float) -> list[Job]:
        """Up to `limit` jobs for a worker on `queues` serving `tasks`, by rules 1 to 7."""
        batch: list[Job] = []
        for name in queues:
            queue = self.queues.get(name)
            if queue is None or name in self.paused:
                continue
            self._take_from_queue(queue, tasks, limit, batch, now)
            if len(batch) >= limit:
                break
        return batch

    def _take_from_queue(self, queue: Queue, tasks: frozenset[str], limit: int, batch: list[Job], now: float) -> None:
        if len(queue.order) > 1:
            for level in starved_levels(queue, now):
                self._take_from_level(queue, level, tasks, len(batch) + 1, batch, now)
                if len(batch) >= limit:
                    return
        for negated in list(queue.order):
            next_level = queue.levels.get(-negated)
            if next_level is not None:
                self._take_from_level(queue, next_level, tasks, limit, batch, now)
                if len(batch) >= limit:
                    return

    def _take_from_level(
        self, queue: Queue, level: Level, tasks: frozenset[str], limit: int, batch: list[Job], now: float
    ) -> None:
        """Round robin over the level's sessions until `batch` holds `limit`
        jobs or no session has one this worker can run."""
        turns = level.turns
        passed = 0  # sessions in a row with nothing for this worker
        while len(batch) < limit and turns and passed < len(turns):
            session = turns[0]
            lines = level.lines[session]
            # A single session takes all it can in one go: no rotation per job.
            want = limit - len(batch) if len(turns) == 1 else 1
            taken = None
            for task, line in lines.items():
                if task in tasks:
                    taken = self._pop(line, want)
                    if taken:
                        break
            if not taken:
                turns.rotate(-1)
                passed += 1
                continue
            passed = 0
            level.served_at = now
            batch.extend(taken)
            self._taken(queue, level, session, lines, task, line, taken)
            if session in level.lines:
                turns.rotate(-1)
            else:
                turns.popleft()

    def _pop(self, line: deque[Job], want: int) -> list[Job]:
        admit = self.admit
        taken: list[Job] = []
        while line and len(taken) < want:
            if admit is not None and not admit(line[0]):
                break
            taken.append(line.popleft())
        return taken

    def _taken(
        self, queue: Queue, level: Level, session: str, lines: dict[str, deque[Job]], task: str,
        line: deque[Job], jobs: list[Job],
    ) -> None:
        """Counts and empty containers after `jobs` left `line`."""
        n = len(jobs)
        calls = sum(job.calls for job in jobs)
        level.count -= n
        queue.count -= n
        queue.calls -= calls
        self.count -= n
        self.calls -= calls
        left = queue.by_task[task] - n
        if left:
            queue.by_task[task] = left
        else:
            del queue.by_task[task]
        left = self.by_task[task] - n
        if left:
            self.by_task[task] = left
        else:
            del self.by_task[task]
        if not line:
            del lines[task]
            if not lines:
                del level.lines[session]
        if not level.count:
            del queue.levels[level.priority]
            queue.order.remove(-level.priority)
            if not queue.count and queue.name not in self.paused:
                del self.queues[queue.name]

    # -- observation -------------------------------------------------------------

    def names(self) -> set[str]:
        return set(self.queues) | self.paused

    def jobs(self) -> Iterator[Job]:
        for queue in self.queues.values():
            for level in queue.levels.values():
                for lines in level.lines.values():
                    for line in lines.values():
                        yield from line


def starved_levels(queue: Queue, now: float) -> list[Level]:
    """Levels waiting for PRIORITY_AGING_S or longer, longest first (rule 5)."""
    cutoff = now - PRIORITY_AGING_S
    starved = [level for level in queue.levels.values() if level.served_at <= cutoff]
    starved.sort(key=lambda level: level.served_at)
    return starved


class DueJobs:
    """Jobs that may not run before a time: delayed jobs and retries.

    A heap by due time. A job due in a month costs its place in the heap
    and its row in the store, nothing else: no timer, no thread.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, Job]] = []
        self.calls = 0
        self.calls_by_queue: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, job: Job, due: float) -> None:
        heapq.heappush(self._heap, (due, job))
        self.calls += job.calls
        self.calls_by_queue[job.queue] = self.calls_by_queue.get(job.queue, 0) + job.calls

    def pop_due(self, now: float) -> list[Job]:
        """Every job due at or before `now`, earliest first."""
        due: list[Job] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            job = heapq.heappop(heap)[1]
            self._uncount(job)
            due.append(job)
        return due

    def _uncount(self, job: Job) -> None:
        """`job` no longer waits here: take its calls off the counts."""
        self.calls -= job.calls
        left = self.calls_by_queue[job.queue] - job.calls
        if left:
            self.calls_by_queue[job.queue] = left
        else:
            del self.calls_by_queue[job.queue]

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def remove_many(self, gids: set[int]) -> int:
        """Take the waiting jobs with these ids out, in one pass."""
        gone = [job for _, job in self._heap if job.gid in gids]
        if gone:
            self._heap = [(due, job) for due, job in self._heap if job.gid not in gids]
            heapq.heapify(self._heap)
            for job in gone:
                self._uncount(job)
        return len(gone)

    def remove(self, job: Job) -> bool:
        """Take a waiting job out (a cancellation); False if it is not here."""
        for index, (_, held) in enumerate(self._heap):
            if held is job:
                last = self._heap.pop()
                if index < len(self._heap):
                    self._heap[index] = last
                    heapq.heapify(self._heap)
                self._uncount(job)
                return True
        return False

    def jobs(self) -> Iterator[Job]:
        return (job for _, job in self._heap)
