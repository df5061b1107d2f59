"""Which chunks are in the pool, and what to do with one whose process died.

A chunk's results come back all at once, when the chunk ends. If its pool
process dies first, none come back: the job it was running is to blame
(it failed), and every other job of the chunk was never meaningfully
attempted, so it runs again in a new chunk. A chunk is taken out of the
book exactly once, by whichever comes first, its results or its loss: the
other is then ignored, so no job is reported twice.

A process can also die between jobs, with no job to blame (killed from
outside, out of memory). Then the whole chunk runs again, but a job is run
again this way at most `max_lost_runs` times, so a job that kills its
process in some way we cannot pin on it fails instead of looping forever.

Pure bookkeeping: no processes, no clock. Thread-safe: the pool's result
thread and the monitor thread both take chunks out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

# on_done(tag, packed results, how many results, ids of jobs handed back unrun)
ChunkDone = Callable[[Any, bytes, int, list[int]], None]


@dataclass
class Chunk:
    id: int
    tag: Any
    jobs: list[list[Any]]
    on_done: ChunkDone
    # Job id -> seconds it may run; only jobs that have a timeout.
    timeouts: dict[int, float]
    rerun: bool = False
    # The pool's AsyncResult, so that a lost chunk can be dropped from it.
    handle: Any = None


@dataclass
class LostChunk:
    chunk: Chunk
    blamed: list[Any] | None  # the job entry that was running, if any
    rerun: list[list[Any]] = field(default_factory=list)
    given_up: list[list[Any]] = field(default_factory=list)  # lost too often


def job_timeouts(jobs: list[list[Any]]) -> dict[int, float]:
    """Job id -> timeout in seconds, for the jobs whose options set one."""
    timeouts: dict[int, float] = {}
    for job in jobs:
        if len(job) > 5 and job[5]:
            timeout = job[5].get("timeout")
            if timeout is not None:
                timeouts[job[0]] = float(timeout)
    return timeouts


class ChunkBook:
    def __init__(self, max_lost_runs: int) -> None:
        self.max_lost_runs = max_lost_runs
        self._lock = threading.Lock()
        self._chunks: dict[int, Chunk] = {}
        self._next_id = 1  # 0 means "no chunk" in a slot
        # Job id -> times it was run again after a loss nobody was blamed for.
        self._lost_runs: dict[int, int] = {}

    def open(self, tag: Any, jobs: list[list[Any]], on_done: ChunkDone, *, rerun: bool = False) -> Chunk:
        with self._lock:
            chunk = Chunk(self._next_id, tag, jobs, on_done, job_timeouts(jobs), rerun)
            self._next_id += 1
            self._chunks[chunk.id] = chunk
        return chunk

    def get(self, chunk_id: int) -> Chunk | None:
        return self._chunks.get(chunk_id)

    def finish(self, chunk_id: int) -> Chunk | None:
        """Take out a chunk whose results came back; None if it was lost
        meanwhile (its results are then to be dropped)."""
        with self._lock:
            chunk = self._chunks.pop(chunk_id, None)
            if chunk is not None and chunk.rerun:
                for job in chunk.jobs:
                    self._lost_runs.pop(job[0], None)
        return chunk

    def lose(self, chunk_id: int, running_job: int | None) -> LostChunk | None:
        """Take out a chunk whose process died while running `running_job`
        (None: between jobs); None if its results already came back."""
        with self._lock:
            chunk = self._chunks.pop(chunk_id, None)
            if chunk is None:
                return None
            blamed = next((job for job in chunk.jobs if job[0] == running_job), None)
            lost = LostChunk(chunk, blamed)
            for job in chunk.jobs:
                if job is blamed:
                    continue
                if blamed is None:
                    runs = self._lost_runs.get(job[0], 0) + 1
                    if runs > self.max_lost_runs:
                        self._lost_runs.pop(job[0], None)
                        lost.given_up.append(job)
                        continue
                    self._lost_runs[job[0]] = runs
                lost.rerun.append(job)
            if blamed is not None:
                self._lost_runs.pop(blamed[0], None)
        return lost

    def __len__(self) -> int:
        return len(self._chunks)

    def job_ids(self) -> set[int]:
        """Ids of every job in a chunk of the book, a snapshot."""
        with self._lock:
            return {job[0] for chunk in self._chunks.values() for job in chunk.jobs}

    def tags(self) -> dict[int, Any]:
        """Chunk id -> tag, a snapshot."""
        with self._lock:
            return {cid: chunk.tag for cid, chunk in self._chunks.items()}
