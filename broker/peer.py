"""One admitted connection's outbound side: a queue of encoded frames and
the thread that writes them.

The broker queues replies here while holding its lock, so `post` never
waits on the network; the writer sends outside the lock, so a slow peer
stalls nobody else. A peer that stops reading is dropped once more than
`max_outbox_bytes` wait for it (queued or stuck in a send) and its writer
has got nothing out for `stall_s`: it is not buffered for without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from sockpool.net.connection import Connection
from sockpool.protocol import ConnectionLost, Message, ProtocolError
from sockpool.protocol.defaults import HEARTBEAT_MISSES, HEARTBEAT_S, MAX_OUTBOX_BYTES
from sockpool.protocol.messages import encode_to_fit

log = logging.getLogger("sockpool.broker")

# A message this small is written by the thread that posts it when the
# peer's outbox is idle (see Peer.post); larger ones always go through the
# writer, so the broker lock is never held while many bytes are copied.
DIRECT_SEND_BYTES = 64 * 1024


class Peer:
    """One admitted connection and the thread that writes to it."""

    def __init__(
        self,
        conn_id: int,
        conn: Connection,
        max_frame_bytes: int,
        max_outbox_bytes: int = MAX_OUTBOX_BYTES,
        stall_s: float = HEARTBEAT_S * HEARTBEAT_MISSES,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        """`may_send` is asked before every write: a broker that lost its
        leadership must not let out even what it queued before."""
        self.conn_id = conn_id
        self.conn = conn
        self.max_frame_bytes = max_frame_bytes  # what the peer accepts, after our welcome
        self.max_outbox_bytes = max_outbox_bytes
        self.stall_s = stall_s
        self.may_send = may_send
        self.generation = 0  # the server's term of leadership that admitted us
        # Encoded frames: their size is known when they are queued, so the
        # cap is exact, and the writer only sends bytes.
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._sending_bytes = 0  # taken by the writer, not yet sent
        self._progress = time.monotonic()  # when the writer last got bytes out or took a batch
        self._dropped = False
        self._writing = False  # the writer holds a batch it has not finished sending
        self._wake = threading.Condition(threading.Lock())
        self._writer = threading.Thread(target=self._write_loop, name=f"write-{conn_id}", daemon=True)
        self._writer.start()

    def post(self, msg: Message) -> list[list[Any]]:
        """Queue a message for sending; never blocks on the network. Returns
        the job entries of a `jobs` message that cannot be sent at all (too
        large for the peer's frames), for the broker to fail them alone.

        Called with the broker lock held, so it must never wait for the
        writer: a peer that stopped reading is cut off instead. A message
        the broker built that cannot be encoded is the broker's fault, not
        the peer's: it is logged and left out, and the peer stays.
        """
        try:
            frames, unsent = encode_to_fit(msg, self.max_frame_bytes)
        except ProtocolError as exc:
            log.error("cannot send a %s message to %s, left out: %s", msg.type, self.conn.peer, exc)
            return []
        size = sum(len(f) for f in frames)
        with self._wake:
            if self._dropped:
                return unsent
            if not self._outbox and not self._writing and size <= DIRECT_SEND_BYTES:
                # Nothing queued or being written: write it from here, at
                # once, without waiting. Waking the writer thread would cost
                # a thread hand-off per message, the largest part of a small
                # job's broker CPU and of its round trip. What the socket
                # does not take at once goes to the writer, in order: we
                # hold _wake, so it cannot start a batch meanwhile.
                frames = self.conn.send_now(frames)
                if not frames:
                    return unsent
                size = sum(len(f) for f in frames)
            self._outbox += frames
            self._outbox_bytes += size
            self._wake.notify()
        self.drop_if_stalled(time.monotonic())
        return unsent

    def drop_if_stalled(self, now: float) -> bool:
        """Cut the connection if too much waits for a peer that reads nothing.

        Both conditions, so neither a burst to a peer that reads (a worker
        granted credit for many large jobs) nor a short pause is punished.
        """
        with self._wake:
            # What the writer holds counts too: a batch stuck in a send to a
            # peer that reads nothing waits as much as the outbox does.
            queued = self._outbox_bytes + self._sending_bytes
            if self._dropped or queued <= self.max_outbox_bytes or now - self._progress <= self.stall_s:
                return False
            self._dropped = True
            self._outbox, self._outbox_bytes = [], 0
        log.warning(
            "dropping %s: it has read nothing for %.0f s and %d bytes wait for it (limit %d)",
            self.conn.peer, self.stall_s, queued, self.max_outbox_bytes,
        )
        self.conn.abort()
        return True

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._outbox and not self.conn.closed:
                    self._wake.wait()
                # Not stuck until now: the clock of a stall starts here.
                self._progress = time.monotonic()
                batch, self._outbox = self._outbox, []
                self._sending_bytes, self._outbox_bytes = self._outbox_bytes, 0
                self._writing = True
            if self.conn.closed:
                return
            if self.may_send is not None and not self.may_send():
                self.conn.abort()
                return
            try:
                self.conn.send_frames(batch, self._made_progress)
            except ConnectionLost:
                return
            finally:
                with self._wake:
                    self._writing = False

    def _made_progress(self, sent_bytes: int) -> None:
        with self._wake:
            self._progress = time.monotonic()
            self._sending_bytes = max(0, self._sending_bytes - sent_bytes)

    def close(self) -> None:
        # Abort first: the writer may hold the send lock, blocked on a peer
        # that does not read, and close() needs that lock.
        self.conn.abort()
        self.conn.close()
        with self._wake:
            self._wake.notify()
