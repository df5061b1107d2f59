"""The client's link to the broker: batching, acknowledgements, reconnects.

`BrokerLink` owns the connection and the bookkeeping that makes a client
survive a broker restart: jobs are kept until the broker acknowledges them
as durable (`accepted`), and sent again on a new connection otherwise; the
broker drops the copies it already has. Results arrive for the session,
not the connection, so nothing is lost in between.

Two threads: the sender sends everything queued by the time it wakes, in
one frame (no timer: a lone job goes at once, a burst goes in batches);
the reader resolves results and, when the connection dies or falls
silent, reconnects with backoff. How a batch is packed into a submit
frame is packing.py's.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from sockpool.protocol import (
    ROLE_CLIENT,
    Accepted,
    Ack,
    ConnectionLost,
    Control,
    ControlReply,
    Error,
    FailedJobs,
    ListFailed,
    HandshakeRefused,
    Message,
    Notice,
    Ping,
    Pong,
    ProtocolError,
    Results,
    Started,
    StatusReply,
    StatusRequest,
    Submit,
    CancelReply,
    RetryReply,
    Welcome,
    error_value,
    pack_body,
    unpack_body,
)
from sockpool.protocol.framing import frame_parts
from sockpool.protocol.splice import large_value
from sockpool.protocol.defaults import (
    HEARTBEAT_MISSES,
    HEARTBEAT_S,
    MAX_JOBS_PER_FRAME,
    MAX_PENDING_JOBS,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    STANDBY_RETRY_MAX_S,
    SUBMIT_FRAME_BYTES,
)
from sockpool.protocol.control import Cancel
from sockpool.protocol.messages import E_UNENCODABLE_ARGUMENTS, REFUSALS, encode_parts

from sockpool.protocol.limits import loggable
from sockpool.net.connection import Connection, NoActiveBroker, connect, new_hello
from sockpool.net.credentials import Credentials
from .errors import BrokerRefused

from .acks import HeldAcks
from .futures import WeakCallback
from .packing import SUBMIT_OVERHEAD_BYTES, pack_entry, packed_size, submit_frame

log = logging.getLogger("sockpool.client")

ResultHandler = Callable[[list[list[Any]]], None]


def _ignore(sent_bytes: int) -> None:
    pass


class BrokerLink:
    def __init__(
        self,
        address: str | None,
        session: str,
        name: str,
        on_results: ResultHandler,
        on_lost: Callable[[BaseException], None],
        connect_timeout_s: float,
        reconnect_timeout_s: float,
        credentials: Credentials | None = None,
        role: str = ROLE_CLIENT,
        on_notice: Callable[[str], None] | None = None,
        on_accepted: Callable[[list[list[Any]]], None] | None = None,
        on_started: Callable[[list[int]], None] | None = None,
    ) -> None:
        """Connect and shake hands. The callbacks are held weakly (see
        `WeakCallback`); with `on_started`, the broker is asked to say
        when our jobs go to a worker.

        Raises:
            ConnectionLost: the broker cannot be reached.
            HandshakeRefused: the broker refused us (or we it: secret, TLS).
        """
        self.address = address
        self.credentials = credentials or Credentials()
        self.session = session
        self.role = role
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self._on_results = WeakCallback(on_results)
        self._on_lost = WeakCallback(on_lost)
        self._on_notice = None if on_notice is None else WeakCallback(on_notice)
        self._notices_logged: set[str] = set()
        self._on_accepted = None if on_accepted is None else WeakCallback(on_accepted)
        self._on_started = None if on_started is None else WeakCallback(on_started)
        lock = threading.Lock()
        self._lock = threading.Condition(lock)
        # The sender thread waits on a condition of its own over the same
        # lock: notifying `_lock` (an accept, a refusal: callers waiting
        # for room) would wake it for nothing, once per lone job, and the
        # GIL switch that costs lands on the round trip.
        self._sender_wanted = threading.Condition(lock)
        self._batches = itertools.count(1)
        self._unsent: list[list[Any]] = []
        self._unaccepted: dict[int, list[list[Any]]] = {}
        # Jobs queued and not yet accepted (in _unsent or _unaccepted): what
        # `queue` bounds, so a caller submitting faster than the broker
        # accepts waits instead of piling jobs up in memory.
        self._pending = 0
        # Jobs the broker refused at submit (their results say why).
        self.refused = 0
        self._sending = False  # a thread is writing batches; frames go one writer at a time
        self._gave_up: BaseException | None = None
        # The broker said it takes no new jobs (disk full); cleared by the
        # next batch it accepts whole. A caller waiting for room gives up.
        self._refusal: Error | None = None
        self._refused_upto = 0  # batches numbered up to this were sent before it
        # Requests waiting for their reply, in the order sent; the broker
        # answers each kind of request in order. `_request_lock` makes
        # "append, then send" one step, so that order is the sending order.
        self._replies: list[tuple[type[Message], Future[Message]]] = []
        self._request_lock = threading.Lock()
        # Client ids of jobs cancelled with `future.cancel()`, for the
        # broker to remove if they still wait: sent in one `cancel`.
        self._cancels: list[int] = []
        # Acks of lone jobs' results, sent with the next submit (acks.py).
        self._held_acks = HeldAcks()
        self._closed = False
        self._closing = threading.Event()  # wakes the heartbeat thread to end
        self._conn: Connection | None = None
        self.welcome = self._connect()
        self._reader = threading.Thread(target=self._read_loop, name="sockpool-results", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="sockpool-submit", daemon=True)

    def start(self) -> None:
        """Start sending and receiving (after the owner is ready for results)."""
        self._reader.start()
        self._sender.start()
        threading.Thread(target=self._keep_loop, name="sockpool-heartbeat", daemon=True).start()

    def _keep_loop(self) -> None:
        """Ping the broker every heartbeat; cut a connection that has been
        silent for HEARTBEAT_MISSES of them, so the reader reconnects."""
        while not self._closing.wait(self._heartbeat_s):
            with self._lock:
                conn, heard, heartbeat_s = self._conn, self._last_heard, self._heartbeat_s
            if conn is None:
                continue
            if time.monotonic() - heard > heartbeat_s * HEARTBEAT_MISSES:
                log.warning("broker silent for %.1f s; reconnecting", time.monotonic() - heard)
                conn.abort()
                continue
            try:
                conn.send_frames([*self._held_acks.take_frames(), *encode_parts(Ping())], _ignore)
            except ConnectionLost:
                pass  # the reader sees it too

    def _connect(self) -> Welcome:
        hello = new_hello(self.role, name=self.name, session=self.session, started=self._on_started is not None)
        conn, welcome = connect(self.address, hello, self.connect_timeout_s, self.credentials)
        # No socket timeout: it would also bound a whole sendall, and a large
        # submit on a slow link would then count as a lost broker. Silence is
        # watched by the keeper thread instead.
        conn.settimeout(None)
        with self._lock:
            self._conn = conn
            self._heartbeat_s = welcome.heartbeat_s or HEARTBEAT_S
            self._last_heard = time.monotonic()
            # Whatever the broker did not confirm goes again, first.
            resend = [job for batch in self._unaccepted.values() for job in batch]
            self._unaccepted.clear()
            self._unsent = resend + self._unsent
            self._lock.notify_all()
            self._sender_wanted.notify()
        return welcome

    # -- used by the client -------------------------------------------------

    def queue(self, job: list[Any], lone: bool = False) -> None:
        """Queue a job for sending; blocks while MAX_PENDING_JOBS are not yet
        accepted by the broker (flow control, also across a reconnect).

        A `lone` job (the caller has no other job in flight) is sent by the
        calling thread itself when nothing else is being sent: waking the
        sender thread would cost a thread handoff on every round trip. Jobs
        of a burst are not lone, so they still travel in batches.

        Raises:
            ConnectionLost: the link is closed or gave up on the broker.
            BrokerRefused: there is no room, and the broker said it takes no
                new jobs for now: waiting could last as long as its trouble.
        """
        with self._lock:
            while (
                self._pending >= MAX_PENDING_JOBS and not self._closed and self._gave_up is None
                and not self._refused_locked()
            ):
                self._lock.wait()
            if self._closed or self._gave_up is not None:
                raise ConnectionLost(f"client is closed: {self._gave_up or 'closed by the caller'}")
            if self._pending >= MAX_PENDING_JOBS and self._refusal is not None:
                raise BrokerRefused(self._refusal.code, self._refusal.message)
            self._unsent.append(job)
            self._pending += 1
            direct = lone and not self._sending and self._conn is not None and len(self._unsent) == 1
            if not direct:
                if len(self._unsent) == 1:
                    self._sender_wanted.notify()
                return
            conn, batches = self._take_batches_locked()
        self._send_batches(conn, batches)

    def queue_many(self, jobs: list[list[Any]]) -> None:
        """Queue jobs for the sender thread, at once: for callers on an
        event loop, which must not wait. They are queued even past
        MAX_PENDING_JOBS; such callers bound what they have in flight
        themselves (AsyncClient.map keeps a window of chunks).

        Raises:
            ConnectionLost: the link is closed or gave up on the broker.
        """
        with self._lock:
            if self._closed or self._gave_up is not None:
                raise ConnectionLost(f"client is closed: {self._gave_up or 'closed by the caller'}")
            wake = not self._unsent
            self._unsent += jobs
            self._pending += len(jobs)
            if wake:
                self._sender_wanted.notify()

    def request(self, msg: Message, timeout_s: float) -> Message:
        """Send a request and wait for its reply (one reply type per request).

        Raises:
            ConnectionLost: no connection, or no reply in time.
        """
        reply: Future[Message] = Future()
        with self._request_lock:
            with self._lock:
                conn = self._conn
                if conn is not None:
                    self._replies.append((_REPLY_TYPES[type(msg)], reply))
            if conn is None:
                raise ConnectionLost("not connected to the broker")
            conn.send(msg)
        try:
            return reply.result(timeout_s)
        except FutureTimeout:
            raise ConnectionLost(f"no reply to {msg.type} within {timeout_s} s") from None

    def send(self, msg: Message) -> None:
        """Send now if connected; a lost message is harmless (acks, pongs)."""
        conn = self._conn
        if conn is not None:
            try:
                conn.send(msg)
            except ConnectionLost:
                pass

    def withdraw(self, ids: list[int], ask_broker: bool = False) -> list[int]:
        """Take back jobs: those not yet sent are dropped here (returned);
        with `ask_broker`, the broker is asked to remove the others if they
        still wait (one `cancel` for all cancelled meanwhile, answered to
        nobody: `future.cancel()` does not wait)."""
        wanted = set(ids)
        with self._lock:
            kept = [job for job in self._unsent if job[0] not in wanted]
            dropped = [job[0] for job in self._unsent if job[0] in wanted]
            if dropped:
                self._unsent = kept
                self._pending -= len(dropped)
            if ask_broker:
                self._cancels += [i for i in ids if i not in set(dropped)]
                self._sender_wanted.notify()
            self._lock.notify_all()
        return dropped

    def _send_cancels(self) -> None:
        with self._request_lock:
            with self._lock:
                ids, self._cancels = self._cancels, []
                conn = self._conn
                if not ids or conn is None:
                    return
                self._replies.append((CancelReply, Future()))  # nobody waits on it
            try:
                conn.send(Cancel(ids=ids))
            except ConnectionLost:
                pass  # the job runs and its result is dropped: what cancel() promised at least

    def wait_accepted(self, timeout_s: float | None) -> bool:
        """Wait until the broker has durably accepted (or refused) every
        queued job.

        Raises:
            BrokerRefused: the broker said it takes no new jobs for now, and
                some jobs are still not accepted.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while self._unsent or self._unaccepted:
                if self._closed:
                    return False
                if self._refused_locked():
                    assert self._refusal is not None
                    raise BrokerRefused(self._refusal.code, self._refusal.message)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def _refused_locked(self) -> bool:
        """The broker said it takes no new jobs after every batch still
        waiting was sent: their answer could be as far off as its recovery."""
        return (
            self._refusal is not None and not self._unsent
            and all(batch <= self._refused_upto for batch in self._unaccepted)
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn = self._conn
            self._lock.notify_all()
            self._sender_wanted.notify()
        self._closing.set()
        if conn is not None:
            held = self._held_acks.take_frames()
            if held:
                try:
                    conn.send_frames(held, _ignore)
                except ConnectionLost:
                    pass  # the results are sent again to the session's next client, which ignores them
            conn.close()
        for thread in (self._reader, self._sender):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=5)

    # -- sending -------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (
                    (not self._unsent and not self._cancels) or self._conn is None or self._sending
                ):
                    self._sender_wanted.wait()
                if self._closed:
                    return
                conn, batches = self._take_batches_locked() if self._unsent else (self._conn, [])
                if not batches:
                    self._sending = True
            self._send_batches(conn, batches)
            # After the submits they may name, so the broker has them first.
            self._send_cancels()

    def _take_batches_locked(self) -> tuple[Connection, list[int]]:
        """Turn every unsent job into numbered batches and claim the right
        to send them (call with _lock held, with a connection)."""
        assert self._conn is not None
        jobs, self._unsent = self._unsent, []
        batches = []
        for start in range(0, len(jobs), MAX_JOBS_PER_FRAME):
            batch_id = next(self._batches)
            self._unaccepted[batch_id] = jobs[start : start + MAX_JOBS_PER_FRAME]
            batches.append(batch_id)
        self._sending = True
        return self._conn, batches

    def _send_batches(self, conn: Connection, batches: list[int]) -> None:
        # Held acks go in the same write as the first submit frame.
        acks = self._held_acks.take_frames()
        try:
            for batch_id in batches:
                acks = self._send_batch(conn, batch_id, acks)
            if acks:
                conn.send_frames(acks, _ignore)
        except ConnectionLost:
            pass  # the reader reconnects and sends them again
        finally:
            with self._lock:
                self._sending = False
                if self._unsent or self._cancels:
                    self._sender_wanted.notify()  # what came meanwhile is the sender thread's

    def _send_batch(self, conn: Connection, batch_id: int, head: list[bytes]) -> list[bytes]:
        """Send one batch in frames under the broker's limit, `head` (whole
        frames) written first in the same write; returns `head` if nothing
        was written, else []. A job that cannot be sent on its own fails
        instead of blocking the rest.

        A batch of small jobs is packed whole, once. Large jobs are packed
        one at a time, each exactly once, and go in frames of about
        SUBMIT_FRAME_BYTES: the broker starts on the first while the next
        are still on the wire, and nothing is packed again to split a frame.
        """
        jobs = self._unaccepted.get(batch_id)
        if jobs is None:
            return head  # a reconnect took it back meanwhile
        limit = min(self.welcome.max_frame_bytes, SUBMIT_FRAME_BYTES)
        if len(jobs) > 1 and not large_value(jobs[0][2]) and packed_size(jobs[0]) * len(jobs) <= limit:
            try:
                body = pack_body(Submit(batch_id, jobs).to_wire())
                # What msgpack encodes, the broker may still refuse (a map with
                # integer keys); that would cost us the connection, over and over.
                unpack_body(body)
            except ProtocolError:
                body = b""  # one job is at fault: find it, one entry at a time
            if body and len(body) <= limit:
                conn.send_frames([*head, *frame_parts(body)], _ignore)
                return []
        return self._send_entries(conn, batch_id, jobs, head)

    def _send_entries(self, conn: Connection, batch_id: int, jobs: list[list[Any]], head: list[bytes]) -> list[bytes]:
        """Pack and check each job alone; refuse those that cannot go; send
        the rest as new batches of about SUBMIT_FRAME_BYTES each, `head`
        before the first; returns `head` if nothing was written."""
        limit = min(self.welcome.max_frame_bytes, SUBMIT_FRAME_BYTES)
        fit = self.welcome.max_frame_bytes - SUBMIT_OVERHEAD_BYTES
        groups: list[tuple[list[list[Any]], list[list[bytes]]]] = []
        size = limit
        refused: list[list[Any]] = []
        for job in jobs:
            try:
                entry = pack_entry(job)
            except ProtocolError as exc:
                refused.append([job[0], False, error_value(E_UNENCODABLE_ARGUMENTS, str(exc))])
                continue
            entry_bytes = sum(len(piece) for piece in entry)
            if entry_bytes > fit:
                message = (
                    f"job arguments take {entry_bytes} bytes encoded, over the broker's "
                    f"frame limit of {self.welcome.max_frame_bytes}"
                )
                refused.append([job[0], False, error_value("ArgumentsTooLarge", message)])
                continue
            if size + entry_bytes > limit:
                groups.append(([], []))
                size = 0
            groups[-1][0].append(job)
            groups[-1][1].append(entry)
            size += entry_bytes
        with self._lock:
            if self._unaccepted.pop(batch_id, None) is None:
                return head  # a reconnect took it back meanwhile: it resends them all
            ids = [next(self._batches) for _ in groups]
            for new_id, (group_jobs, _) in zip(ids, groups):
                self._unaccepted[new_id] = group_jobs
            self._pending -= len(refused)
            if refused:
                self._lock.notify_all()
        if refused:
            self._on_results(refused)
        for new_id, (_, entries) in zip(ids, groups):
            conn.send_frames([*head, *submit_frame(new_id, entries)], _ignore)
            head = []
        return head

    def _refuse(self, batch_id: int, error: dict[str, Any]) -> None:
        with self._lock:
            jobs = self._unaccepted.pop(batch_id)
            self._pending -= len(jobs)
            self._lock.notify_all()
        self._on_results([[job[0], False, error] for job in jobs])

    # -- receiving -----------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            with self._lock:
                conn = self._conn
            try:
                assert conn is not None
                self._read(conn)
            except (ConnectionLost, ProtocolError) as exc:
                conn.close()
                with self._lock:
                    self._conn = None
                    closed = self._closed
                    replies, self._replies = self._replies, []
                for _, reply in replies:
                    reply.set_exception(ConnectionLost(str(exc)))
                if closed:
                    return
                log.warning("lost the broker (%s); reconnecting", exc)
                try:
                    self._reconnect()
                except (ConnectionLost, HandshakeRefused) as final:
                    self._give_up(final)
                    return
            except BaseException as exc:  # top of a thread: never leave futures hanging
                self._give_up(ConnectionLost(f"client reader failed: {exc!r}"))
                raise

    def _give_up(self, exc: BaseException) -> None:
        with self._lock:
            self._gave_up = exc
            self._lock.notify_all()  # callers blocked in queue() raise now
        self._on_lost(exc)

    def _read(self, conn: Connection) -> None:
        while True:
            msg = conn.recv()
            self._last_heard = time.monotonic()
            if isinstance(msg, Results):
                self._on_results(msg.results)
            elif isinstance(msg, Started):
                if self._on_started is not None:
                    self._on_started(msg.ids)
            elif isinstance(msg, Accepted):
                with self._lock:
                    batch = self._unaccepted.pop(msg.batch, ())
                    self._pending -= len(batch)
                    self.refused += max(0, len(batch) - msg.count)
                    if self._refusal is not None and msg.count and msg.count == len(batch):
                        self._refusal = None  # the broker takes jobs again
                    self._lock.notify_all()
                if batch and self._on_accepted is not None:
                    self._on_accepted(list(batch))
            elif isinstance(msg, Ping):
                conn.send(Pong())
            elif isinstance(msg, (FailedJobs, StatusReply, CancelReply, RetryReply, ControlReply)):
                # Each kind of reply comes in the order of its requests.
                with self._lock:
                    index = next((i for i, (kind, _) in enumerate(self._replies) if kind is type(msg)), None)
                    reply = self._replies.pop(index)[1] if index is not None else None
                if reply is not None:
                    reply.set_result(msg)
            elif isinstance(msg, Notice):
                if self._on_notice is not None:
                    self._on_notice(msg.message)
                elif msg.message not in self._notices_logged and len(self._notices_logged) < 100:
                    self._notices_logged.add(msg.message)  # once each, not once per batch
                    log.warning("broker says: %s", msg.message)
            elif isinstance(msg, Error):
                log.error("broker says %s: %s", loggable(msg.code), loggable(msg.message, 2000))
                if msg.code in REFUSALS:
                    with self._lock:
                        self._refusal = msg
                        self._refused_upto = max(self._unaccepted, default=self._refused_upto)
                        self._lock.notify_all()
            elif not isinstance(msg, Pong):
                raise ProtocolError(f"unexpected {msg.type!r} from the broker")

    def _reconnect(self) -> None:
        """Connect again with backoff, until `reconnect_timeout_s` runs out.

        Raises:
            ConnectionLost: gave up, or the client was closed meanwhile.
            HandshakeRefused: the broker refused us; retrying cannot help.
        """
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay = RECONNECT_MIN_S
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionLost("client closed")
            try:
                self.welcome = self._connect()
                log.info("reconnected to broker %s", self.welcome.broker)
                return
            except ConnectionLost as exc:
                if time.monotonic() + delay > deadline:
                    raise ConnectionLost(f"gave up reconnecting after {self.reconnect_timeout_s:.0f} s: {exc}") from exc
                # Only standbys answered: a failover is under way, and ends soon.
                cap = STANDBY_RETRY_MAX_S if isinstance(exc, NoActiveBroker) else RECONNECT_MAX_S
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, cap)

    def ack(self, ids: list[int] | None, later: bool = False) -> None:
        """Tell the broker it may forget these results (None: all of them);
        `later`: with the next frame sent, a heartbeat at the latest (acks.py)."""
        if ids is None:
            self._held_acks.take()  # all=True covers them
            self.send(Ack(all=True))
            return
        ids = self._held_acks.hold(ids) if later else self._held_acks.take(ids)
        if ids:
            self.send(Ack(ids=ids))


# The reply the broker sends to each request.
_REPLY_TYPES: dict[type[Message], type[Message]] = {}


def _reply_types() -> None:
    from sockpool.protocol import ListFailed, StatusRequest
    from sockpool.protocol.control import Retry

    _REPLY_TYPES.update({
        ListFailed: FailedJobs, StatusRequest: StatusReply, Cancel: CancelReply, Retry: RetryReply,
        Control: ControlReply,
    })


_reply_types()
