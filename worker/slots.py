"""What each pool process is running, in memory shared with the pool.

The pool processes write, the worker's main process reads. One slot per
pool process holds three int64s: its pid, the chunk it is running (0 for
none) and the job it is running (NO_JOB for none), plus one shared
`draining` flag for the whole pool. A process that dies mid-job leaves its
slot as it was, which is how the main process learns which job killed it.

Rules:
1. Only the process that claimed a slot writes its chunk and job fields,
   and it writes them with plain stores: per job one store before and one
   after, so tiny jobs stay fast. No lock on that path.
2. A slot is claimed under the shared lock, and only if it is empty (pid 0)
   or its process is dead with no chunk in it. A dead process's slot that
   still names a chunk is evidence: only the main process frees it
   (`free`), after it has dealt with that chunk.
3. There are more slots than processes, so replacement processes find a
   free slot while the main process has not yet dealt with a dead one.

Start times are not written here: the main process notes when it first
sees a job in a slot, which is precise enough for timeouts in seconds and
keeps a clock call off the per-job path.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

NO_JOB = -(2**63)
_FIELDS = 3  # pid, chunk, job
# How long a new pool process waits for a free slot before it runs untracked.
CLAIM_TIMEOUT_S = 2.0


def slot_count(processes: int) -> int:
    """Room for every process plus replacements not yet matched to their
    dead predecessors."""
    return 2 * processes + 4


@dataclass(frozen=True)
class SlotView:
    """One slot as read at one moment."""

    index: int
    pid: int
    chunk: int
    job: int

    @property
    def running(self) -> bool:
        return self.chunk != 0 and self.job != NO_JOB


class Slots:
    """The shared table; built in the main process, passed to each pool
    process through the pool initializer (which is when it may be pickled)."""

    def __init__(self, context: BaseContext, count: int) -> None:
        self.count = count
        self.ints = context.RawArray("q", count * _FIELDS)  # type: ignore[attr-defined]
        self.flags = context.RawArray("b", 1)  # type: ignore[attr-defined]
        self.lock = context.Lock()
        for i in range(count):
            self.ints[i * _FIELDS + 2] = NO_JOB

    # -- main process ------------------------------------------------------

    def read(self, index: int) -> SlotView:
        base = index * _FIELDS
        ints = self.ints
        return SlotView(index, ints[base], ints[base + 1], ints[base + 2])

    def occupied(self) -> list[SlotView]:
        ints = self.ints
        return [self.read(i) for i in range(self.count) if ints[i * _FIELDS] != 0]

    def free(self, index: int, pid: int) -> None:
        """Empty a dead process's slot, unless a new process claimed it."""
        base = index * _FIELDS
        with self.lock:
            if self.ints[base] == pid:
                self.ints[base + 1] = 0
                self.ints[base + 2] = NO_JOB
                self.ints[base] = 0

    def set_draining(self, draining: bool = True) -> None:
        self.flags[0] = 1 if draining else 0

    @property
    def draining(self) -> bool:
        return bool(self.flags[0])

    # -- pool processes ----------------------------------------------------

    def claim(self, pid: int, timeout_s: float = CLAIM_TIMEOUT_S) -> int:
        """Take a free slot for process `pid`; its index, or -1 if none came
        free in time (the process then runs untracked)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                for i in range(self.count):
                    base = i * _FIELDS
                    holder = self.ints[base]
                    if holder == 0 or (self.ints[base + 1] == 0 and not pid_alive(holder)):
                        self.ints[base + 1] = 0
                        self.ints[base + 2] = NO_JOB
                        self.ints[base] = pid
                        return i
            if time.monotonic() >= deadline:
                return -1
            time.sleep(0.01)

    def writer(self, index: int) -> tuple[Any, Any, int]:
        """(ints, flags, base): fast views for a pool process to write its
        slot at `index` through; a private table if `index` is -1."""
        if index < 0:
            return memoryview(bytearray(8 * _FIELDS)).cast("q"), memoryview(self.flags).cast("B").cast("b"), 0
        ints = memoryview(self.ints).cast("B").cast("q")
        flags = memoryview(self.flags).cast("B").cast("b")
        return ints, flags, index * _FIELDS


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
