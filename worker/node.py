"""The worker's link to the broker: join, take jobs, send results, reconnect.

`WorkerNode` owns the connection and nothing of the pool beyond handing it
job batches. It pulls work with credit: the broker sends no more jobs than
the node has granted, and the node grants only as many as keep its
processes busy for about `prefetch_target_s` beyond what they are running.
Long jobs therefore get no prefetch at all, and tiny jobs travel in
batches big enough to hide the round trip.

Per connection three threads: the caller's reads, `results` writes
everything (results, release, drain, ping, pong: one writer at a time, so
frames never interleave and a blocked socket holds up no reader), and `keeper`
ticks: it asks for a ping every heartbeat with the jobs running right now,
and if nothing at all came from the broker for HEARTBEAT_MISSES heartbeats
it cuts the connection, which unblocks everything else. The node then
reconnects with backoff, forever, and says so in its log each time.
A chunk's results are written by the thread that has them (the pool's
result thread) when no write is under way and nothing else is due, with
a write that never waits (`Connection.send_now`); what the socket does
not take at once, and everything else, is the `results` thread's. That
cuts a thread hand-off (a wake-up and a GIL switch) from every lone
job's round trip, as the broker's PATH does on its side.
A refusal (wrong secret, TLS on one side only, version) is not retried:
`run` raises it, and `worker join` exits.
Jobs of a connection that has closed are abandoned (runner.abandon):
the broker has already requeued them, so those running are stopped and
the rest handed back unrun, before the node reconnects.

`request_drain()` (safe in a signal handler: it only sets a flag the
keeper acts on) sends `drain`, hands back jobs not yet started with
`release`, sends the results of those running, then closes; past
`drain_timeout_s` it closes anyway and the broker requeues what is left.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
import time

from sockpool.protocol.limits import loggable
from sockpool.net.connection import Connection, NoActiveBroker, connect, new_hello
from sockpool.net.credentials import Credentials
from sockpool.protocol import (
    ROLE_WORKER,
    ConnectionLost,
    Credit,
    Drain,
    Error,
    Jobs,
    Ping,
    Pong,
    ProtocolError,
    Release,
    Stop,
    Tasks,
    Welcome,
    encode,
    frame,
)
from sockpool.protocol.batch import fit_results, results_body
from sockpool.protocol.defaults import (
    CONNECT_TIMEOUT_S,
    DRAIN_TIMEOUT_S,
    HANDSHAKE_MAX_FRAME_BYTES,
    HEARTBEAT_MISSES,
    HEARTBEAT_S,
    MAX_CREDIT_PER_PROCESS,
    PREFETCH_TARGET_S,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    STANDBY_RETRY_MAX_S,
)

from .outbox import Due, Outbox
from .runner import Runner

# Room in a hello for the nonce that authentication adds to it.
_NONCE_ROOM_BYTES = 64
# Task names per `tasks` message: far under any frame limit.
_TASKS_PER_MESSAGE = 1000

log = logging.getLogger("sockpool.worker")

# How often the keeper looks at the clock and the drain flag.
TICK_S = 0.05
# After the last result of a drain, how long to wait for the broker to close
# its end before we do: its close tells us it read everything.
CLOSE_GRACE_S = 2.0


class WorkerNode:
    def __init__(
        self,
        address: str | None,
        runner: Runner,
        *,
        name: str | None = None,
        prefetch_target_s: float = PREFETCH_TARGET_S,
        credentials: Credentials | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        queues: list[str] | None = None,
    ) -> None:
        self.address = address
        # The queues we take jobs from, most preferred first (empty: "default").
        self.queues = list(queues or [])
        self.credentials = credentials or Credentials()
        self.runner = runner
        self.name = name or socket.gethostname()
        self.prefetch_target_s = prefetch_target_s
        self.drain_timeout_s = drain_timeout_s
        self._stopping = threading.Event()
        # Set from a signal handler, so a plain store: taking a lock there
        # could deadlock with the interrupted main thread.
        self._drain_requested = False
        self._lock = threading.Lock()
        self._conn: Connection | None = None  # guarded by _lock
        self._last_received = 0.0  # monotonic; written by the reader only

    def run(self) -> None:
        """Serve until `stop()`, or a drain ends; reconnect whenever the
        broker goes away.

        Raises:
            HandshakeRefused: the broker refused us; retrying cannot help.
        """
        delay = RECONNECT_MIN_S
        while not self._stopping.is_set() and not self._drain_requested:
            names = list(self.runner.task_names)
            # `successors`: the runner keeps a limit's next job until the one
            # before it ended here (worker/gates.py).
            hello = new_hello(
                ROLE_WORKER, name=self.name, tasks=names, processes=self.runner.processes, queues=self.queues,
                successors=True,
            )
            # The broker reads only a few KiB from a peer it has not yet
            # authenticated: task names that do not fit follow the welcome.
            later = len(encode(hello)) + _NONCE_ROOM_BYTES > HANDSHAKE_MAX_FRAME_BYTES
            if later:
                hello = new_hello(
                    ROLE_WORKER, name=self.name, processes=self.runner.processes, queues=self.queues, successors=True
                )
            try:
                conn, welcome = connect(self.address, hello, CONNECT_TIMEOUT_S, self.credentials)
                # One link: an 8 MiB jobs frame reuses the last one's pages.
                conn.decoder.keep_mapping()
                if later:
                    for start in range(0, len(names), _TASKS_PER_MESSAGE):
                        conn.send(Tasks(names[start : start + _TASKS_PER_MESSAGE]))
            except (ConnectionLost, ProtocolError) as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._pause(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, STANDBY_RETRY_MAX_S if isinstance(exc, NoActiveBroker) else RECONNECT_MAX_S)
                continue
            delay = RECONNECT_MIN_S
            log.info("joined broker %s with %d processes", welcome.broker, self.runner.processes)
            self._serve(conn, welcome)
            if self._drain_requested:
                log.info("drained; leaving the broker")
                return
            if not self._stopping.is_set():
                log.warning("lost the broker; reconnecting")

    def request_drain(self) -> None:
        """Stop taking jobs and leave once those started have finished.
        Safe to call from a signal handler."""
        self._drain_requested = True

    def stop(self) -> None:
        """Leave now; jobs running or queued here are the broker's to requeue."""
        self._stopping.set()
        with self._lock:
            conn = self._conn
        if conn is not None:
            conn.close()

    def _pause(self, seconds: float) -> None:
        """Sleep, but notice a stop or a drain request within a tick."""
        deadline = time.monotonic() + seconds
        while not self._drain_requested and time.monotonic() < deadline:
            if self._stopping.wait(min(TICK_S, max(0.0, deadline - time.monotonic()))):
                return

    # -- one connection ----------------------------------------------------

    def _serve(self, conn: Connection, welcome: Welcome) -> None:
        outbox = Outbox(self.credit_window)
        with self._lock:
            self._conn = conn
        self._last_received = time.monotonic()
        heartbeat_s = welcome.heartbeat_s if welcome.heartbeat_s > 0 else HEARTBEAT_S
        max_frame_bytes = welcome.max_frame_bytes

        def on_done(tag: Outbox, packed: bytes, count: int, released: list[int]) -> None:
            # On the pool's result thread or the monitor: never waits.
            self._write_now(conn, tag, max_frame_bytes, packed, count, released)

        threads = [
            threading.Thread(target=self._send_loop, args=(conn, outbox, welcome.max_frame_bytes), name="results", daemon=True),
            threading.Thread(target=self._keep_loop, args=(conn, outbox, heartbeat_s), name="keeper", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            conn.send(Credit(outbox.first_grant()))
            while True:
                msg = conn.recv()
                self._last_received = time.monotonic()
                if isinstance(msg, Jobs):
                    if outbox.received([job[0] for job in msg.jobs]):
                        self.runner.run(msg.jobs, outbox, on_done, msg.holders, msg.after)
                elif isinstance(msg, Stop):
                    self.runner.stop(msg.ids)
                elif isinstance(msg, Ping):
                    outbox.ask(pong=True)
                elif isinstance(msg, Error):
                    log.error("broker says %s: %s", loggable(msg.code), loggable(msg.message, 2000))
                elif not isinstance(msg, Pong):
                    raise ProtocolError(f"unexpected {msg.type!r} from the broker")
        except ConnectionLost as exc:
            log.debug("%s", exc)
        except ProtocolError as exc:
            log.error("protocol error from the broker: %s", exc)
        finally:
            conn.close()
            outbox.close()
            with self._lock:
                self._conn = None
            for thread in threads:
                thread.join(timeout=5)
            # Whatever still runs for this connection is the broker's to
            # requeue: stop it rather than run it twice at once.
            if not self._stopping.is_set():
                self.runner.abandon(outbox)

    def _send_loop(self, conn: Connection, outbox: Outbox, max_frame_bytes: int) -> None:
        """Send whatever is due, all of it in one write; results in as few
        frames under the broker's limit as they fit in."""
        while (due := outbox.take()) is not None:
            try:
                conn.send_bytes(b"".join(self._frames(due, outbox, max_frame_bytes)))
            except ConnectionLost:
                return
            finally:
                outbox.written()
            if due.drained:
                # Half-close: the broker reads everything, then closes its
                # end, which ends our reader.
                log.info("drain done: every job here finished or was handed back")
                outbox.close()
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return

    def _write_now(
        self, conn: Connection, outbox: Outbox, max_frame_bytes: int, packed: bytes, count: int, released: list[int]
    ) -> None:
        """Hand a chunk's results over, and write them from this thread if
        the outbox says we may; what the socket does not take at once
        goes to the `results` thread, first in its next write."""
        due = outbox.finished(packed, count, released, write_now=True)
        if due is None:
            return
        unsent: list[bytes] = []
        try:
            # A failed socket is closed by send_now and leaves nothing: the
            # reader sees it and the broker requeues what it gave us.
            unsent = [bytes(piece) for piece in conn.send_now(self._frames(due, outbox, max_frame_bytes))]
        finally:
            outbox.written(unsent)

    def _frames(self, due: Due, outbox: Outbox, max_frame_bytes: int) -> list[bytes]:
        """Everything `due` says to send, as whole frames in order; results
        in as few frames under the broker's limit as they fit in."""
        parts = list(due.unsent)
        if due.drain:
            parts.append(encode(Drain()))
        if due.packed:
            groups = fit_results(due.packed, max_frame_bytes)
            for i, group in enumerate(groups):
                # The credit rides on the last frame, after the results it makes room for.
                parts.append(frame(results_body(group, due.grant if i == len(groups) - 1 else 0)))
        if due.released:
            log.info("handing back %d job(s) that had not started", len(due.released))
            parts.append(encode(Release(due.released)))
        if due.pong:
            parts.append(encode(Pong()))
        if due.ping:
            parts.append(encode(Ping(running=self.runner.running_ids(outbox))))
        return parts

    def _keep_loop(self, conn: Connection, outbox: Outbox, heartbeat_s: float) -> None:
        """Heartbeats, the broker's silence, and the drain's clock."""
        silence_limit_s = HEARTBEAT_MISSES * heartbeat_s
        next_ping = time.monotonic() + heartbeat_s
        drain_deadline = drained_at = None
        while not self._stopping.wait(TICK_S) and not conn.closed:
            now = time.monotonic()
            if self._drain_requested and drain_deadline is None:
                drain_deadline = now + self.drain_timeout_s
                log.info("draining: %d job(s) here finish or go back, for at most %g s",
                         outbox.outstanding, self.drain_timeout_s)
                self.runner.drain()
                outbox.start_drain()
            if drain_deadline is not None and now > drain_deadline:
                log.warning("drain timed out after %g s; leaving %d job(s) to the broker",
                            self.drain_timeout_s, outbox.outstanding)
                break
            if outbox.closed and drain_deadline is not None:
                drained_at = drained_at or now
                if now > drained_at + CLOSE_GRACE_S:
                    break
            if now - self._last_received > silence_limit_s:
                log.warning("no word from the broker for %.1f s; dropping the connection", now - self._last_received)
                break
            if now >= next_ping:
                outbox.ask(ping=True)
                next_ping = now + heartbeat_s
        _abort(conn)

    def credit_window(self) -> int:
        """Jobs this node wants on hand: one per process, plus enough queued
        to keep each process busy for `prefetch_target_s`, plus room for a
        successor per job here holding a limit's slot without one (else a
        worker whose jobs outlast the prefetch target, with one job per
        process, could never be sent one: worker/gates.py)."""
        processes = self.runner.processes
        per_job = self.runner.seconds_per_job
        successors = self.runner.gates.wanted
        if per_job is None:
            return processes + successors
        extra = min(MAX_CREDIT_PER_PROCESS, math.floor(self.prefetch_target_s / max(per_job, 1e-7)))
        return processes * (1 + extra) + successors


def _abort(conn: Connection) -> None:
    """Cut the connection even if a send is blocked on it: shutdown first,
    without the send lock, makes that send fail and let go of the lock."""
    try:
        conn.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
