"""Watches the pool processes: deaths, timeouts, and what is running.

`multiprocessing.Pool` replaces a dead process by itself, but the chunk the
dead process was running never completes (python/cpython issue 96062).
Every `TICK_S` this thread reads the shared slots (see slots.py) and:

- for a process that died with a chunk in its slot, hands the chunk to
  `on_lost` with the job that was running, to be failed, and the rest,
  to be run again;
- for a job past its `timeout` option, takes its chunk out of the book
  first and then SIGKILLs the process: from then on the process's death
  is ours, and whatever chunk it was in by then runs again unblamed;
- for a job the broker asked us to stop (`stop_jobs`), does the same as
  soon as it is seen running, reporting it as cancelled. A stopped job
  whose chunk ends first (or that never starts here) is simply forgotten:
  the broker has already dropped its lease and ignores its result.

The pool hands us each process it creates (`adopt`). A process counts as
dead once the pool has reaped it (it is no longer in the pool's list),
which is also when its exit code is known; polling the exit code ourselves
would race with the pool's own handler thread, which reads it from the
same pipe. A process we were never handed is checked with kill(pid, 0).

It must never block the pool: it only reads slots, kills, and calls back.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable

from .chunks import ChunkBook, LostChunk
from .slots import SlotView, Slots, pid_alive

log = logging.getLogger("sockpool.worker")

TICK_S = 0.05

# on_lost(lost chunk, error type, message for the blamed job)
OnLost = Callable[[LostChunk, str, str], None]


def describe_exit(exitcode: int | None) -> str:
    """An exit code as multiprocessing reports it, in words."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-exitcode} ({name})"
    return f"exit code {exitcode}"


def died_message(exitcode: int | None) -> str:
    return f"the pool process running this job died ({describe_exit(exitcode)})"


def timeout_message(limit_s: float) -> str:
    return f"timeout: the job ran longer than its {limit_s:g} s timeout, so its pool process was killed"


class Monitor:
    def __init__(
        self,
        slots: Slots,
        book: ChunkBook,
        pool_processes: Callable[[], list[Any]],
        on_lost: OnLost,
        *,
        died_type: str,
        timeout_type: str,
        cancelled_type: str = "Cancelled",
    ) -> None:
        self.slots = slots
        self.book = book
        self.pool_processes = pool_processes
        self.on_lost = on_lost
        self.died_type = died_type
        self.timeout_type = timeout_type
        self.cancelled_type = cancelled_type
        self._stop_lock = threading.Lock()
        self._to_stop: set[int] = set()  # job ids the broker wants stopped
        self._known: dict[int, Any] = {}  # pid -> multiprocessing.Process
        self._adopted: list[Any] = []  # handed to us, maybe not started yet
        self._adopt_lock = threading.Lock()
        self._first_seen: dict[tuple[int, int, int], float] = {}  # (slot, chunk, job) -> when
        self._killed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pool-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def adopt(self, proc: Any) -> None:
        """A process the pool is about to start (on the pool's threads)."""
        with self._adopt_lock:
            self._adopted.append(proc)

    def stop_jobs(self, ids: list[int]) -> None:
        """Kill the process of each of these jobs once it is seen running
        (within a tick); safe from any thread."""
        with self._stop_lock:
            self._to_stop.update(ids)

    def running(self) -> list[SlotView]:
        """The slots whose process is running a job right now."""
        return [slot for slot in self.slots.occupied() if slot.running]

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick(time.monotonic())
            except Exception:  # the monitor must outlive any one bad tick
                log.exception("pool monitor failed; going on")

    def tick(self, now: float) -> None:
        with self._adopt_lock:
            started = [proc for proc in self._adopted if proc.pid is not None]
            self._adopted = [proc for proc in self._adopted if proc.pid is None]
        self._known.update((proc.pid, proc) for proc in started)
        live = {proc.pid: proc for proc in self.pool_processes()}
        self._known.update(live)
        first_seen: dict[tuple[int, int, int], float] = {}
        in_slots = set()
        with self._stop_lock:
            to_stop = set(self._to_stop)
        for slot in self.slots.occupied():
            in_slots.add(slot.pid)
            dead, exitcode = self._status(slot.pid, live)
            if dead:
                self._on_death(slot, exitcode)
            elif slot.running and slot.job in to_stop:
                self._kill_stopped(slot)
            elif slot.running:
                self._check_timeout(slot, now, first_seen)
        self._first_seen = first_seen
        for pid in [pid for pid in self._known if pid not in live and pid not in in_slots]:
            del self._known[pid]
        self._killed &= in_slots
        if to_stop:
            # Forget the ids that are in no chunk any more: stopped, done, or
            # never here.
            pending = self.book.job_ids()
            with self._stop_lock:
                self._to_stop &= pending | (self._to_stop - to_stop)

    def _status(self, pid: int, live: dict[int, Any]) -> tuple[bool, int | None]:
        if pid in live:
            return False, None
        proc = self._known.get(pid)
        if proc is not None:
            return True, proc.exitcode  # reaped by the pool: cached, no syscall
        return (False, None) if pid_alive(pid) else (True, None)

    def _on_death(self, slot: SlotView, exitcode: int | None) -> None:
        self.slots.free(slot.index, slot.pid)
        if slot.pid in self._killed:
            # We killed it for a timeout and already dealt with that job; any
            # chunk it moved on to meanwhile is nobody's fault.
            self._killed.discard(slot.pid)
            lost = self.book.lose(slot.chunk, None) if slot.chunk else None
            if lost is not None:
                self.on_lost(lost, self.died_type, died_message(exitcode))
            return
        if not slot.chunk:
            log.warning("pool process %d died between chunks (%s)", slot.pid, describe_exit(exitcode))
            return
        lost = self.book.lose(slot.chunk, slot.job if slot.running else None)
        if lost is None:
            return
        log.warning(
            "pool process %d died (%s) running job %s; %d job(s) of its chunk run again",
            slot.pid, describe_exit(exitcode), lost.blamed[0] if lost.blamed else "none", len(lost.rerun),
        )
        self.on_lost(lost, self.died_type, died_message(exitcode))

    def _kill_stopped(self, slot: SlotView) -> None:
        if self._kill_for(
            slot, self.cancelled_type, "cancelled: its pool process was stopped on request",
            why="stopped (on request, or its connection is gone)",
        ):
            with self._stop_lock:
                self._to_stop.discard(slot.job)

    def _check_timeout(self, slot: SlotView, now: float, first_seen: dict[tuple[int, int, int], float]) -> None:
        chunk = self.book.get(slot.chunk)
        if chunk is None or not chunk.timeouts:
            return
        limit = chunk.timeouts.get(slot.job)
        if limit is None:
            return
        key = (slot.index, slot.chunk, slot.job)
        started = first_seen[key] = self._first_seen.get(key, now)
        if now - started <= limit or self.slots.read(slot.index) != slot:
            return
        self._kill_for(slot, self.timeout_type, timeout_message(limit), why=f"passed its {limit:g} s timeout")

    def _kill_for(self, slot: SlotView, error_type: str, message: str, *, why: str) -> bool:
        """Fail the job running in `slot` as `error_type` and SIGKILL its
        process; False if its chunk finished first (the process lives on)."""
        # Out of the book before the kill: if the chunk's results win the
        # race, lose() says so and the process lives on. From here on the
        # process's death is ours (_killed), not the job's next chunk's.
        lost = self.book.lose(slot.chunk, slot.job)
        if lost is None:
            return False
        self._killed.add(slot.pid)
        try:
            os.kill(slot.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.warning("job %d %s; killed pool process %d", slot.job, why, slot.pid)
        self.on_lost(lost, error_type, message)
        return True
