"""The worker's process pool: runs jobs in chunks, knows nothing of sockets.

`Runner` hands batches of job entries to a `multiprocessing.Pool` in chunks
sized from how long jobs have been taking, and calls back with each chunk's
packed results. The functions below `Runner` run inside the pool processes.

Pool callbacks run on the pool's result-handler thread, so the callback a
`Runner` is given must only hand the results on, never block.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import signal
import time
import traceback
from typing import Any, Callable

from protocol import error_value
from protocol.batch import pack_results

from .registry import load_tasks

# Weight of the newest chunk in the running estimate of seconds per job.
_EWMA_WEIGHT = 0.3

ChunkDone = Callable[[Any, bytes, int], None]


def default_processes() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Runner:
    def __init__(self, processes: int, modules: list[str], chunk_target_s: float) -> None:
        # Import the task modules here first, so a typo fails at start-up with
        # a clear error instead of in every pool process.
        self.task_names = sorted(load_tasks(modules))
        self.processes = processes
        self.chunk_target_s = chunk_target_s
        self.seconds_per_job: float | None = None
        # forkserver: pool processes replaced while our threads run are forked
        # from a clean single-threaded server, never from this process.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self.pool = context.Pool(processes, initializer=_init_process, initargs=(modules,))

    def run(self, jobs: list[list[Any]], tag: Any, on_done: ChunkDone) -> None:
        """Run job entries; `on_done(tag, packed_results, count)` per chunk."""
        size = self.chunk_size(len(jobs))
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            self.pool.apply_async(
                run_chunk,
                (chunk,),
                callback=lambda done, n=len(chunk): self._chunk_done(tag, done, n, on_done),
                error_callback=lambda exc, c=chunk: on_done(tag, _pool_failure(c, exc), len(c)),
            )

    def chunk_size(self, jobs: int) -> int:
        """Enough jobs per chunk to take about `chunk_target_s`, and never so
        many that a batch would keep a process idle."""
        fair = math.ceil(jobs / self.processes)
        if self.seconds_per_job is None:
            return 1
        return max(1, min(fair, int(self.chunk_target_s / max(self.seconds_per_job, 1e-7))))

    def _chunk_done(self, tag: Any, done: tuple[bytes, float], count: int, on_done: ChunkDone) -> None:
        packed, elapsed_s = done
        per_job = elapsed_s / count
        previous = self.seconds_per_job
        self.seconds_per_job = per_job if previous is None else previous + _EWMA_WEIGHT * (per_job - previous)
        on_done(tag, packed, count)

    def close(self) -> None:
        """Stop the pool processes now; jobs still running are abandoned."""
        self.pool.terminate()
        self.pool.join()


# -- inside the pool processes ------------------------------------------------

_tasks: dict[str, Callable[..., Any]] = {}


def _init_process(modules: list[str]) -> None:
    # Ctrl-C goes to the whole process group; the worker's main process
    # decides what happens to running jobs, not each pool process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _tasks.update(load_tasks(modules))


def run_chunk(jobs: list[list[Any]]) -> tuple[bytes, float]:
    """Run job entries; returns their packed result entries and the time taken."""
    started = time.perf_counter()
    results = [run_job(*job) for job in jobs]
    packed = pack_results(results, _unencodable)
    return packed, time.perf_counter() - started


def run_job(job_id: int, task: str, args: list[Any], kwargs: dict[str, Any], many: bool) -> list[Any]:
    fn = _tasks.get(task)
    if fn is None:
        return [job_id, False, error_value("UnknownTask", f"this worker does not serve task {task!r}")]
    if not many:
        try:
            return [job_id, True, fn(*args, **kwargs)]
        except BaseException as exc:  # SystemExit too: it must not kill the pool process
            return [job_id, False, _describe(exc)]
    call = functools.partial(fn, **kwargs) if kwargs else fn
    values: list[Any] = []
    errors: dict[int, dict[str, Any]] = {}
    # One tight loop per run of successes, not a try per item: a failure
    # records itself and the loop resumes after it.
    while len(values) < len(args):
        try:
            for arg in args[len(values) :] if values else args:
                values.append(call(arg))
        except BaseException as exc:
            errors[len(values)] = _describe(exc)
            values.append(None)
    if not errors:
        return [job_id, True, values]
    # The first failure speaks for the chunk; `items` says how each item went.
    items = [[False, errors[i]] if i in errors else [True, v] for i, v in enumerate(values)]
    return [job_id, False, {**errors[min(errors)], "items": items}]


def _describe(exc: BaseException) -> dict[str, Any]:
    return error_value(type(exc).__name__, str(exc), traceback.format_exc())


def _unencodable(entry: list[Any], exc: Exception) -> list[Any]:
    return [entry[0], False, error_value("UnencodableResult", f"the task's result cannot be sent: {exc}")]


def _pool_failure(chunk: list[list[Any]], exc: BaseException) -> bytes:
    """Results for a chunk the pool itself failed on (for example, an
    argument that could not be passed to the pool process)."""
    error = error_value(type(exc).__name__, f"pool failure: {exc}")
    return pack_results([[job[0], False, error] for job in chunk], _unencodable)
