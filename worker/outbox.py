"""What a worker node owes the broker on one connection, and its credit.

One `Outbox` per connection: the pool's callbacks put results and
handed-back job ids in, the reader asks for a pong, the keeper for a ping
or a drain, and the sending thread takes out everything due at once. A
closed outbox takes nothing more in: results for a connection that has
gone are dropped, as the broker has requeued those jobs.

One writer at a time: whoever takes a `Due` (the sending thread with
`take`, or the thread that finished a chunk with `take_now`) writes it,
and nobody takes the next until `written()` says it is out. `take_now`
never waits: it gives results to the thread that has them only while no
write is under way, nothing but results is due and no other job here is
still running (a lone job's case; a busy node's results wait for the
sending thread, which writes many at once), so a lone result skips
the hand-off to the sending thread. Bytes such a write left unsent go
first in the next `Due`, so frames stay whole and in order.

Credit: the broker sends no more jobs than granted. The grant keeps
`window()` jobs on hand (received, results not yet sent), counting credit
granted but not yet used; while draining, nothing more is granted.

Pure bookkeeping: no sockets, no clock; a Condition for the threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Due:
    """Everything to send now, in one write."""

    packed: list[bytes] = field(default_factory=list)  # packed result arrays
    released: list[int] = field(default_factory=list)
    grant: int = 0  # credit to send along with the results
    drain: bool = False
    ping: bool = False
    pong: bool = False
    # Draining and nothing left here once this is sent: the last write.
    drained: bool = False
    # What the previous write left unsent: it goes first, as it is.
    unsent: list[bytes] = field(default_factory=list)


class Outbox:
    def __init__(self, window: Callable[[], int]) -> None:
        self.window = window
        self.cond = threading.Condition(threading.Lock())
        self.closed = False
        self.draining = False
        self._due = Due()
        self._finished = 0  # jobs whose results are packed, not yet sent
        self._outstanding = 0  # jobs received, results not yet sent
        self._unused_credit = 0  # credit granted that the broker has not used
        self._writing = False  # a Due was taken and is not yet written()

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def first_grant(self) -> int:
        with self.cond:
            return self._grant_locked()

    def received(self, ids: list[int]) -> bool:
        """Jobs arrived; False if they are to go straight back (draining)."""
        with self.cond:
            self._outstanding += len(ids)
            self._unused_credit -= len(ids)
            if not self.draining:
                return True
            # Sent before the broker read our drain.
            self._due.released.extend(ids)
            self.cond.notify_all()
            return False

    def finished(self, packed: bytes, count: int, released: list[int], write_now: bool = False) -> Due | None:
        """`count` results packed, and jobs handed back unrun.

        With `write_now`, returns what is due for the caller to write at
        once if it may (as `take_now`), without waking the sending thread;
        otherwise None, and the sending thread sends it."""
        with self.cond:
            if self.closed:
                return None
            if count:
                self._due.packed.append(packed)
                self._finished += count
            self._due.released.extend(released)
            if write_now and self._may_take_now_locked():
                return self._take_locked()
            self.cond.notify_all()
            return None

    def ask(self, *, ping: bool = False, pong: bool = False) -> None:
        with self.cond:
            self._due.ping |= ping
            self._due.pong |= pong
            self.cond.notify_all()

    def start_drain(self) -> None:
        with self.cond:
            self.draining = True
            self._due.drain = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self) -> Due | None:
        """Wait until something is due and no write is under way, and take
        all of it; None once closed. Call `written()` once it is sent."""
        with self.cond:
            while not self.closed and (self._writing or not _anything(self._due)):
                self.cond.wait()
            if self.closed:
                return None
            return self._take_locked()

    def take_now(self) -> Due | None:
        """Results due, for the caller to write at once, if no write is
        under way and nothing else is due (a ping, a drain: those are the
        sending thread's); else None, and the sending thread sends them.
        Never waits. Call `written()` once it is sent."""
        with self.cond:
            return self._take_locked() if self._may_take_now_locked() else None

    def _may_take_now_locked(self) -> bool:
        due = self._due
        if self.closed or self.draining or self._writing or not due.packed:
            return False
        if self._finished < self._outstanding:
            # Other jobs here are still running: their results will follow
            # soon, and the sending thread writes them all at once, fewer
            # frames for the broker to read than one write per chunk.
            return False
        return not (due.drain or due.ping or due.pong)

    def written(self, unsent: list[bytes] | None = None) -> None:
        """The Due taken is out, but for `unsent`, which goes first in the
        next one (the sending thread's to write, if nothing else comes)."""
        with self.cond:
            self._writing = False
            if unsent:
                self._due.unsent = unsent
            # Wake the sending thread only for something to send: waking
            # it for nothing would cost the switch the direct write saved.
            if _anything(self._due):
                self.cond.notify_all()

    def _take_locked(self) -> Due:
        due = self._due
        self._writing = True
        self._due = Due()
        self._outstanding -= self._finished + len(due.released)
        self._finished = 0
        if due.packed:
            due.grant = self._grant_locked()
        due.drained = self.draining and self._outstanding == 0
        return due

    def _grant_locked(self) -> int:
        if self.draining:
            return 0
        grant = max(0, self.window() - self._outstanding - self._unused_credit)
        self._unused_credit += grant
        return grant


def _anything(due: Due) -> bool:
    return bool(due.packed or due.released or due.drain or due.ping or due.pong or due.unsent)
