"""What a worker node owes the broker on one connection, and its credit.

One `Outbox` per connection: the pool's callbacks put results and
handed-back job ids in, the reader asks for a pong, the keeper for a ping
or a drain, and the sending thread takes out everything due at once. A
closed outbox takes nothing more in: results for a connection that has
gone are dropped, as the broker has requeued those jobs.

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

    def finished(self, packed: bytes, count: int, released: list[int]) -> None:
        """`count` results packed, and jobs handed back unrun."""
        with self.cond:
            if self.closed:
                return
            if count:
                self._due.packed.append(packed)
                self._finished += count
            self._due.released.extend(released)
            self.cond.notify_all()

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
        """Wait until something is due, and take all of it; None once closed."""
        with self.cond:
            due = self._due
            while not self.closed and not (due.packed or due.released or due.drain or due.ping or due.pong):
                self.cond.wait()
            if self.closed:
                return None
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
