"""The worker's link to the broker: join, take jobs, send results, reconnect.

`WorkerNode` owns the connection and nothing of the pool beyond handing it
job batches. It pulls work with credit: the broker sends no more jobs than
the node has granted, and the node grants only as many as keep its
processes busy for about `prefetch_target_s` beyond what they are running.
Long jobs therefore get no prefetch at all, and tiny jobs travel in
batches big enough to hide the round trip.

If the broker goes away the node reconnects with backoff, forever, and
says so in its log each time. A refusal (wrong secret, TLS mismatch,
version) is not retried: `run` raises it, and `worker join` exits. Results of jobs started on a connection
that has since closed are dropped: the broker has already requeued them.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
from typing import Any

from client.connection import Connection, connect, new_hello
from client.credentials import Credentials
from protocol import (
    ROLE_WORKER,
    ConnectionLost,
    Credit,
    HandshakeRefused,
    Jobs,
    Ping,
    Pong,
    ProtocolError,
    Error,
    frame,
)
from protocol.batch import fit_results, results_body
from protocol.defaults import (
    CONNECT_TIMEOUT_S,
    MAX_CREDIT_PER_PROCESS,
    PREFETCH_TARGET_S,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
)

from .runner import Runner

log = logging.getLogger("sockpool.worker")


class WorkerNode:
    def __init__(
        self,
        address: str | None,
        runner: Runner,
        *,
        name: str | None = None,
        prefetch_target_s: float = PREFETCH_TARGET_S,
        credentials: Credentials | None = None,
    ) -> None:
        self.address = address
        self.credentials = credentials or Credentials()
        self.runner = runner
        self.name = name or socket.gethostname()
        self.prefetch_target_s = prefetch_target_s
        self._stopping = threading.Event()
        self._lock = threading.Condition(threading.Lock())
        self._conn: Connection | None = None
        self._epoch = 0
        # Per connection; all guarded by _lock.
        self._packed: list[bytes] = []
        self._finished = 0  # jobs whose results are packed, not yet counted
        self._outstanding = 0  # jobs received, results not yet sent
        self._unused_credit = 0  # credit granted that the broker has not used

    def run(self) -> None:
        """Serve until `stop()`, reconnecting whenever the broker goes away.

        Raises:
            HandshakeRefused: the broker refused us; retrying cannot help.
        """
        delay = RECONNECT_MIN_S
        while not self._stopping.is_set():
            hello = new_hello(
                ROLE_WORKER, name=self.name, tasks=self.runner.task_names, processes=self.runner.processes
            )
            try:
                conn, welcome = connect(self.address, hello, CONNECT_TIMEOUT_S, self.credentials)
            except (ConnectionLost, ProtocolError) as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._stopping.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_MIN_S
            log.info("joined broker %s with %d processes", welcome.broker, self.runner.processes)
            self._serve(conn, welcome.max_frame_bytes)
            if not self._stopping.is_set():
                log.warning("lost the broker; reconnecting")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            conn = self._conn
            self._lock.notify_all()
        if conn is not None:
            conn.close()

    # -- one connection ----------------------------------------------------

    def _serve(self, conn: Connection, max_frame_bytes: int) -> None:
        with self._lock:
            self._epoch += 1
            self._conn = conn
            self._packed, self._finished, self._outstanding, self._unused_credit = [], 0, 0, 0
            epoch = self._epoch
        sender = threading.Thread(
            target=self._send_loop, args=(conn, epoch, max_frame_bytes), name="results", daemon=True
        )
        sender.start()
        try:
            with self._lock:
                grant = self._grant_locked()
            conn.send(Credit(grant))
            while True:
                msg = conn.recv()
                if isinstance(msg, Jobs):
                    with self._lock:
                        self._outstanding += len(msg.jobs)
                        self._unused_credit -= len(msg.jobs)
                    self.runner.run(msg.jobs, epoch, self._chunk_done)
                elif isinstance(msg, Ping):
                    conn.send(Pong())
                elif isinstance(msg, Error):
                    log.error("broker says %s: %s", msg.code, msg.message)
                elif not isinstance(msg, Pong):
                    raise ProtocolError(f"unexpected {msg.type!r} from the broker")
        except ConnectionLost as exc:
            log.debug("%s", exc)
        except ProtocolError as exc:
            log.error("protocol error from the broker: %s", exc)
        finally:
            conn.close()
            with self._lock:
                self._conn = None
                self._lock.notify_all()
            sender.join(timeout=5)

    def _chunk_done(self, epoch: Any, packed: bytes, count: int) -> None:
        # On the pool's result thread: hand over and return at once.
        with self._lock:
            if epoch != self._epoch or self._conn is None:
                return  # that connection is gone; the broker requeued these jobs
            self._packed.append(packed)
            self._finished += count
            self._lock.notify()

    def _send_loop(self, conn: Connection, epoch: int, max_frame_bytes: int) -> None:
        """Send finished results as they come, all that are ready in as few
        frames under the broker's limit as they fit in."""
        while True:
            with self._lock:
                while not self._packed and self._conn is conn:
                    self._lock.wait()
                if self._conn is not conn or self._epoch != epoch:
                    return
                packed, self._packed = self._packed, []
                self._outstanding -= self._finished
                self._finished = 0
                grant = self._grant_locked()
            groups = fit_results(packed, max_frame_bytes)
            try:
                for i, group in enumerate(groups):
                    # The credit rides on the last frame, after the results it makes room for.
                    conn.send_bytes(frame(results_body(group, grant if i == len(groups) - 1 else 0)))
            except ConnectionLost:
                return

    def _grant_locked(self) -> int:
        """How much more credit to give the broker now (call with _lock held)."""
        window = self.credit_window()
        grant = max(0, window - self._outstanding - self._unused_credit)
        self._unused_credit += grant
        return grant

    def credit_window(self) -> int:
        """Jobs this node wants on hand: one per process, plus enough queued
        to keep each process busy for `prefetch_target_s`."""
        processes = self.runner.processes
        per_job = self.runner.seconds_per_job
        if per_job is None:
            return processes
        extra = min(MAX_CREDIT_PER_PROCESS, math.floor(self.prefetch_target_s / max(per_job, 1e-7)))
        return processes * (1 + extra)
