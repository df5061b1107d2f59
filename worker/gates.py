"""Jobs that may start only once another job ended here: a concurrency
limit's slot passing on at this worker (broker/succession.py).

The broker names, in `jobs.holders`, the jobs it sends that hold a
limit's slot, and in `jobs.after`, a successor for such a holder. Rules:
1. A successor whose holder has not ended here waits in `Gates`, outside
   the pool: no pool process can pick it up early. A successor whose
   holder is not here (it ended before the successor arrived) runs at once.
2. A holder ends here when the pool reports its result, failure, crash,
   timeout or stop: its successor goes to the pool then (before the
   holder's result is handed on: the successor's result comes back on the
   same pool thread, so it still follows the holder's to the broker), and
   from then on holds the slot itself (it may have a successor of its own).
3. A holder handed back unrun (a drain) takes its successor back with it;
   a successor stopped while it waits goes back unrun; while draining, a
   waiting successor goes back at once.
4. When the connection its jobs came on is gone, its successors are
   dropped, never started (the broker requeues them; a restarted broker
   admits its jobs afresh).
5. Each holder here without a successor wants one: the node grants a
   credit more for each (`wanted`), or a worker whose jobs outlast its
   prefetch target (one job per process) would have no credit to be
   sent one with.

Pure bookkeeping: no processes, no sockets. Thread-safe: the node's
reader adds, the pool's result thread and the monitor take out.
"""

from __future__ import annotations

import threading
from typing import Any

from sockpool.protocol import ProtocolError

from .chunks import ChunkDone

# A successor waiting for its holder: (tag, job entry, its on_done).
Waiting = tuple[Any, list[Any], ChunkDone]


class Gates:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holding: dict[int, Any] = {}  # job id -> tag: holds a slot, has not ended here
        self._waiting: dict[int, Waiting] = {}  # holder id -> its successor

    @property
    def wanted(self) -> int:
        """Jobs here holding a slot (or about to) with no successor waiting:
        each could take one (the node grants credit for them)."""
        # Each waiting successor is one holder that has one, and itself a
        # holder-to-be that cannot have one yet. No lock: it is read under
        # the outbox's, and a count a moment old only shifts a grant.
        return max(0, len(self._holding) - 2 * len(self._waiting))

    @property
    def active(self) -> bool:
        """Whether any job here holds a slot (else nothing here is gated)."""
        return bool(self._holding)

    def sort(self, tag: Any, jobs: list[list[Any]], holders: list[int], after: list[list[int]],
             on_done: ChunkDone) -> list[list[Any]]:
        """Note the holders among `jobs`; keep back the successors whose
        holder has not ended here (rule 1). Returns the jobs to run now.

        Raises:
            ProtocolError: a second successor for one holder (the broker
                names one at a time; running either early could overrun
                the limit).
        """
        waits = {gid: holder for gid, holder in after}
        run: list[list[Any]] = []
        with self._lock:
            for gid in holders:
                self._holding[gid] = tag
            for entry in jobs:
                holder = waits.get(entry[0])
                if holder is None:
                    run.append(entry)
                    continue
                self._holding[entry[0]] = tag  # it holds the slot once it starts
                if self._holding.get(holder) is tag:
                    if holder in self._waiting:
                        raise ProtocolError(f"jobs: job {holder} was given a second successor")
                    self._waiting[holder] = (tag, entry, on_done)
                else:
                    run.append(entry)
        return run

    def ended(self, ids: list[int]) -> list[Waiting]:
        """These jobs ended here: their successors, to start now (rule 2)."""
        start: list[Waiting] = []
        with self._lock:
            for gid in ids:
                if self._holding.pop(gid, None) is not None:
                    successor = self._waiting.pop(gid, None)
                    if successor is not None:
                        start.append(successor)
        return start

    def handed_back(self, ids: list[int]) -> list[Waiting]:
        """These jobs go back unrun: their successors go back too (rule 3)."""
        return self.ended(ids)

    def stop(self, ids: list[int]) -> list[Waiting]:
        """Take these jobs out if they wait here; returns those that did."""
        wanted = set(ids)
        with self._lock:
            found = [(holder, waiting) for holder, waiting in self._waiting.items() if waiting[1][0] in wanted]
            for holder, waiting in found:
                del self._waiting[holder]
                self._holding.pop(waiting[1][0], None)
        return [waiting for _, waiting in found]

    def take_all(self) -> list[Waiting]:
        """Every waiting successor (a drain hands them back)."""
        with self._lock:
            waiting = list(self._waiting.values())
            self._waiting.clear()
            for _, entry, _ in waiting:
                self._holding.pop(entry[0], None)
        return waiting

    def drop(self, tag: Any) -> None:
        """The connection of `tag` is gone: forget its jobs here (rule 4)."""
        with self._lock:
            self._holding = {gid: t for gid, t in self._holding.items() if t is not tag}
            self._waiting = {h: w for h, w in self._waiting.items() if w[0] is not tag}
