"""The worker's process pool: runs jobs in chunks, knows nothing of sockets.

`Runner` hands batches of job entries to a `multiprocessing.Pool` in chunks
sized from how long jobs have been taking, and calls back with each chunk's
packed results. The functions below `Runner` run inside the pool processes.

Every job accepted comes back exactly once through the callback: with its
result, as a failure (its process died, or it passed its timeout; see
monitor.py), or, once `drain()` was called and it had not started, as an
id handed back unrun.

Callbacks run on the pool's result-handler thread or the monitor thread,
so the callback a `Runner` is given must only hand the results on, never
block.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from typing import Any, Callable

from sockpool.protocol import ProtocolError, error_value
from sockpool.protocol.batch import pack_results
from sockpool.protocol.defaults import MAX_LOST_ATTEMPTS
from sockpool.protocol.messages import E_PROCESS_DIED, E_TIMEOUT, E_UNENCODABLE_ARGUMENTS, E_UNKNOWN_TASK
from sockpool.protocol.packed import pack_array, unpack_array
from sockpool.protocol.values import from_wire_kwargs, wire_value

from sockpool.protocol.control import E_CANCELLED

from .calls import callable_for, initialize
from .chunks import Chunk, ChunkBook, ChunkDone, LostChunk
from .forkserver import forkserver_context
from .gates import Gates, Waiting
from .monitor import Monitor
from .pool import ChunkPool
from .registry import load_tasks
from .slots import NO_JOB, Slots, pid_alive, slot_count

log = logging.getLogger("sockpool.worker")

# Weight of the newest chunk in the running estimate of seconds per job.
_EWMA_WEIGHT = 0.3


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
        context = forkserver_context()
        self.slots = Slots(context, slot_count(processes))
        self.book = ChunkBook(MAX_LOST_ATTEMPTS)
        self.gates = Gates()  # successors waiting for a limit's slot (gates.py)
        self.monitor = Monitor(
            self.slots, self.book, self._pool_processes, self._chunk_lost,
            died_type=E_PROCESS_DIED, timeout_type=E_TIMEOUT, cancelled_type=E_CANCELLED,
        )
        self.pool = ChunkPool(
            processes, _init_process, (modules, self.slots), context=context, on_process=self.monitor.adopt
        )
        self.monitor.start()

    def run(
        self, jobs: list[list[Any]], tag: Any, on_done: ChunkDone,
        holders: list[int] | None = None, after: list[list[int]] | None = None,
    ) -> None:
        """Run job entries; `on_done(tag, packed_results, count, released_ids)`
        per chunk, where `count` is how many results are packed. `holders`
        and `after` (jobs.holders, jobs.after): successors start only once
        their holder ended here (gates.py).

        Raises:
            ProtocolError: `after` names a second successor for one holder.
        """
        if holders or after:
            jobs = self.gates.sort(tag, jobs, holders or [], after or [], on_done)
            if self.slots.draining:
                self._hand_back(self.gates.take_all())
            if not jobs:
                return
        size = self.chunk_size(len(jobs))
        for start in range(0, len(jobs), size):
            self._submit(self.book.open(tag, jobs[start : start + size], on_done))

    def chunk_size(self, jobs: int) -> int:
        """Enough jobs per chunk to take about `chunk_target_s`, and never so
        many that a batch would keep a process idle."""
        fair = math.ceil(jobs / self.processes)
        if self.seconds_per_job is None:
            return 1
        return max(1, min(fair, int(self.chunk_target_s / max(self.seconds_per_job, 1e-7))))

    def running_ids(self, tag: Any = None) -> list[int]:
        """Jobs the pool processes are running right now (of chunks tagged
        `tag`, unless it is None)."""
        ids = []
        for slot in self.monitor.running():
            chunk = self.book.get(slot.chunk)
            if chunk is not None and (tag is None or chunk.tag == tag):
                ids.append(slot.job)
        return ids

    def stop(self, ids: list[int]) -> None:
        """Stop these jobs: the pool process running one is killed and
        replaced (as for a timeout), and the job reported as cancelled; a
        successor still waiting for its holder goes back unrun."""
        if self.gates.active:
            self._hand_back(self.gates.stop(ids))
        self.monitor.stop_jobs(ids)

    def abandon(self, tag: Any, timeout_s: float = 2.0) -> None:
        """The connection the chunks tagged `tag` came on is gone: the broker
        requeues their jobs and would drop their results, so stop running
        them. Running jobs are killed (as a stop does); jobs not started
        are handed back unrun (as in a drain), with no process killed.
        Waits up to `timeout_s` for those chunks to leave the pool, so that
        no run of them overlaps the jobs of the next connection (which
        matters to global limits: a broker restarted after a kill -9 admits
        those jobs again).
        """
        self.gates.drop(tag)  # first: nothing ending below may start one
        if not any(t is tag for t in self.book.tags().values()):
            return
        draining = self.slots.draining
        self.slots.set_draining()
        self.monitor.stop_jobs(self.running_ids(tag))
        deadline = time.monotonic() + timeout_s
        while any(t is tag for t in self.book.tags().values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not draining:
            self.slots.set_draining(False)

    def drain(self) -> None:
        """From now on, jobs not yet started come back unrun (as released ids)."""
        self.slots.set_draining()
        self._hand_back(self.gates.take_all())

    @property
    def busy(self) -> bool:
        """Some chunk has not come back yet."""
        return len(self.book) > 0

    def _submit(self, chunk: Chunk) -> None:
        # With a process free for it (no more chunks here than processes),
        # the chunk goes to the pool from this thread (see pool.py): a lone
        # job skips the task-handler thread. Beyond that, chunks queue for
        # the task handler as before, in the order they came.
        apply = self.pool.apply_now if len(self.book) <= self.processes else self.pool.apply_async
        try:
            chunk.handle = apply(
                run_chunk,
                (chunk.id, chunk.jobs),
                callback=lambda done, cid=chunk.id: self._chunk_done(cid, done),
                error_callback=lambda exc, cid=chunk.id: self._chunk_failed(cid, exc),
            )
        except ValueError:  # the pool is closed: we are shutting down
            self.book.finish(chunk.id)

    def _chunk_done(self, chunk_id: int, done: tuple[bytes, float, int, list[int]]) -> None:
        chunk = self.book.finish(chunk_id)
        if chunk is None:
            return  # lost meanwhile and dealt with: these results are not ours to send
        packed, elapsed_s, count, released = done
        if count:
            per_job = elapsed_s / count
            previous = self.seconds_per_job
            self.seconds_per_job = per_job if previous is None else previous + _EWMA_WEIGHT * (per_job - previous)
        if self.gates.active:
            # Successors first: their results come back on this same thread,
            # so they still follow this chunk's to the broker.
            gone = set(released)
            self._ended([job[0] for job in chunk.jobs if job[0] not in gone], released)
        _hand_on(chunk, packed, count, released)

    def _chunk_failed(self, chunk_id: int, exc: BaseException) -> None:
        chunk = self.book.finish(chunk_id)
        if chunk is not None:
            _hand_on(chunk, _pool_failure(chunk.jobs, exc), len(chunk.jobs), [])
            if self.gates.active:
                self._ended([job[0] for job in chunk.jobs], [])

    def _ended(self, ended: list[int], released: list[int]) -> None:
        """Jobs that ended here (or came back unrun): start their
        successors, or hand those back with them (gates.py). On the pool's
        result thread or the monitor: as `_hand_on`, a failure here exits
        rather than leave a successor waiting for ever."""
        try:
            start = self.gates.ended(ended)
            back = self.gates.handed_back(released) if released else []
            if start and self.slots.draining:
                back, start = back + start, []
            for tag, entry, on_done in start:
                self._submit(self.book.open(tag, [entry], on_done))
            self._hand_back(back)
        except BaseException:
            log.critical("a successor could not be started; exiting so the broker requeues our jobs", exc_info=True)
            os._exit(70)

    def _hand_back(self, waiting: list[Waiting]) -> None:
        for tag, entry, on_done in waiting:
            on_done(tag, b"", 0, [entry[0]])

    def _chunk_lost(self, lost: LostChunk, error_type: str, message: str) -> None:
        """On the monitor thread: fail the job to blame, run the rest again."""
        chunk = lost.chunk
        self._forget(chunk)
        failed = []
        if lost.blamed is not None:
            failed.append([lost.blamed[0], False, error_value(error_type, message)])
        for job in lost.given_up:
            text = f"lost {MAX_LOST_ATTEMPTS + 1} times with a pool process that died before the job could finish"
            failed.append([job[0], False, error_value(E_PROCESS_DIED, text)])
        if failed:
            chunk.on_done(chunk.tag, pack_results(failed, _unencodable), len(failed), [])
            if self.gates.active:
                self._ended([entry[0] for entry in failed], [])
        if lost.rerun:
            self._submit(self.book.open(chunk.tag, lost.rerun, chunk.on_done, rerun=True))

    def _forget(self, chunk: Chunk) -> None:
        # The pool keeps the AsyncResult of a lost chunk forever; drop it.
        # (If a result ever arrives for it, the pool ignores the unknown key.)
        # `del`, not pop(): the pool's cache wakes the pool's handler when
        # it empties, in __delitem__.
        cache = getattr(self.pool, "_cache", None)
        job = getattr(chunk.handle, "_job", None)
        if cache is not None and job is not None:
            try:
                del cache[job]
            except KeyError:
                pass

    def _pool_processes(self) -> list[Any]:
        # The pool's own list of its processes: it has no public one.
        return list(getattr(self.pool, "_pool", ()))

    def pool_pids(self) -> list[int]:
        """The pids of the pool's processes that are alive."""
        return [proc.pid for proc in self._pool_processes() if pid_alive(proc.pid)]

    def kill_processes(self) -> None:
        """SIGKILL every pool process at once (for an impatient exit)."""
        for proc in self._pool_processes():
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, TypeError):
                pass

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop the pool processes now; jobs still running are abandoned.

        The pool's terminate() kills its processes (they ignore SIGTERM, see
        pool_signals.py). Bounded: a pool stuck on a lock a killed process
        held gets every process SIGKILLed again after `timeout_s`, and after
        as long again we give up on it. Returns whether the pool shut down.
        """
        self.monitor.stop()
        closer = threading.Thread(target=self._terminate, name="pool-close", daemon=True)
        closer.start()
        closer.join(timeout_s)
        if closer.is_alive():
            log.warning("pool processes did not stop within %g s; killing them", timeout_s)
            self.kill_processes()
            closer.join(timeout_s)
        return not closer.is_alive()

    def _terminate(self) -> None:
        self.pool.terminate()
        self.pool.join()


def _hand_on(chunk: Chunk, packed: bytes, count: int, released: list[int]) -> None:
    """Pass a chunk's results on, from the pool's result-handler thread.

    An exception here would end that thread silently: the worker would keep
    its heartbeats and its jobs forever. Exiting instead lets the broker
    requeue every job this worker holds, and a supervisor restart it.
    """
    try:
        chunk.on_done(chunk.tag, packed, count, released)
    except BaseException:
        log.critical("results could not be handed on; exiting so the broker requeues our jobs", exc_info=True)
        os._exit(70)


# -- inside the pool processes ------------------------------------------------

_tasks: dict[str, Callable[..., Any]] = {}
# This process's slot: (ints, flags, base), see Slots.writer.
_slot: tuple[Any, Any, int] = (memoryview(bytearray(24)).cast("q"), memoryview(bytearray(1)), 0)


def _init_process(modules: list[str], slots: Slots) -> None:
    global _slot
    # Ctrl-C and systemd's stop reach the whole process group; the worker's
    # main process decides what happens to running jobs, not each pool
    # process (pool_signals.py did this in the forkserver already, before
    # we were forked; this covers a forkserver that could not import it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _tasks.update({name: callable_for(fn) for name, fn in load_tasks(modules).items()})
    index = slots.claim(os.getpid())
    if index < 0:
        log.warning("no free slot for pool process %d: its crashes and timeouts go unseen", os.getpid())
    _slot = slots.writer(index)


def run_chunk(chunk_id: int, jobs: list[list[Any]]) -> tuple[bytes, float, int, list[int]]:
    """Run job entries; returns their packed result entries, the time taken,
    how many ran, and the ids of those handed back unrun because the worker
    is draining."""
    started = time.perf_counter()
    ints, flags, base = _slot
    job_field = base + 2
    ints[base + 1] = chunk_id
    results = []
    released: list[int] = []
    # The per-job cost of the slot is one load and two stores: keep it so.
    for index, job in enumerate(jobs):
        if flags[0]:
            released = [job[0] for job in jobs[index:]]
            break
        ints[job_field] = job[0]
        results.append(run_job(job[0], job[1], job[2], job[3], job[4], job[5] if len(job) > 5 else None))
        ints[job_field] = NO_JOB
    packed = pack_results(results, _unencodable)
    ints[base + 1] = 0
    return packed, time.perf_counter() - started, len(results), released


def run_job(
    job_id: int, task: str, args: list[Any], kwargs: dict[str, Any], many: bool, options: dict[str, Any] | None = None
) -> list[Any]:
    fn = _tasks.get(task)
    if fn is None:
        return [job_id, False, error_value(E_UNKNOWN_TASK, f"this worker does not serve task {task!r}")]
    if options and "init" in options:
        failure = initialize(options["init"], _tasks)
        if failure is not None:
            return [job_id, False, failure]
    try:
        # A map chunk's items come packed, and so do arguments holding
        # tuples or big ints (see protocol/values.py).
        args = unpack_array(args)
        kwargs = from_wire_kwargs(kwargs) if kwargs else kwargs
    except ProtocolError as exc:
        return [job_id, False, error_value(E_UNENCODABLE_ARGUMENTS, f"the job's arguments cannot be read: {exc}")]
    if not many:
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # SystemExit too: it must not kill the pool process
            return [job_id, False, _describe(exc)]
        return [job_id, True, _wired(value)]
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
        # Packed here, in parallel, so that no later hop decodes the items.
        return [job_id, True, pack_array(values, checked=True)]
    # The first failure speaks for the chunk; `items` says how each item went.
    # `items` stays a list (the broker checks that much); each value in it
    # is a wire value of its own.
    items = [[False, errors[i]] if i in errors else [True, _wired(v)] for i, v in enumerate(values)]
    return [job_id, False, {**errors[min(errors)], "items": items}]


def _wired(value: Any) -> Any:
    """`value` as the wire carries it; as it is if msgpack cannot encode it
    (pack_results then reports this job's result as unencodable)."""
    try:
        return wire_value(value)
    except Exception:
        return value


def _describe(exc: BaseException) -> dict[str, Any]:
    error = error_value(type(exc).__name__, str(exc), traceback.format_exc())
    # The exception's own args, where msgpack can carry them, so that the
    # caller's JobFailed has the same `args` (and a SystemExit its code).
    try:
        error["args"] = wire_value(list(exc.args))
    except Exception:
        pass
    return error


def _unencodable(entry: list[Any], exc: Exception) -> list[Any]:
    return [entry[0], False, error_value("UnencodableResult", f"the task's result cannot be sent: {exc}")]


def _pool_failure(chunk: list[list[Any]], exc: BaseException) -> bytes:
    """Results for a chunk the pool itself failed on (for example, an
    argument that could not be passed to the pool process)."""
    error = error_value(type(exc).__name__, f"pool failure: {exc}")
    return pack_results([[job[0], False, error] for job in chunk], _unencodable)
