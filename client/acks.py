"""Acknowledgements the client holds back to send with its next frame.

A lone job's `ack` sent on its own costs the broker a wake-up of its
reader, a decode and a transaction of its journal (the `forget`) for every
round trip, and that work lands on the next round trip: the next submit
waits behind it, on the broker's GIL and behind that commit. When no other
job is in flight, the client keeps the ids here instead; they go out in the
same write as its next submit (one `sendmsg`, one wake-up of the broker,
the `forget` in the same commit as the next `add`), or with the next
heartbeat, or at close, whichever comes first.

An ack that never arrives costs nothing but memory on the broker: it keeps
the result, and sends it again after a reconnect, which the client ignores
(and acknowledges again). So holding one back for at most a heartbeat
(2 s) is safe, and MAX_HELD bounds how many are held.
"""

from __future__ import annotations

import threading

from sockpool.protocol import Ack
from sockpool.protocol.messages import encode_parts

# More held back than this and they go out at once: a busy client's acks
# never wait (they come in batches anyway); only lone jobs' ones do.
MAX_HELD = 64


class HeldAcks:
    """Ids of results to acknowledge with the next frame sent; thread-safe.

    The frame is packed when the ids are held (on the reader thread, which
    has nothing else to do then), not when it is taken: taking happens on
    the caller's thread, on the way to the broker with its next submit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._frames: list[bytes] = []  # the `ack` of _ids, packed

    def hold(self, ids: list[int]) -> list[int]:
        """Keep `ids` for later; returns what must go now instead (everything
        held, once there are more than MAX_HELD), else []."""
        with self._lock:
            self._ids += ids
            if len(self._ids) <= MAX_HELD:
                self._frames = encode_parts(Ack(ids=self._ids))
                return []
            ids, self._ids, self._frames = self._ids, [], []
        return ids

    def take(self, ids: list[int] | None = None) -> list[int]:
        """Everything held (and `ids`, after it), now no longer held."""
        with self._lock:
            held, self._ids, self._frames = self._ids, [], []
        return held + (ids or [])

    def take_frames(self) -> list[bytes]:
        """The frame of an `ack` of everything held, or [] if none is."""
        with self._lock:
            frames, self._ids, self._frames = self._frames, [], []
        return frames
