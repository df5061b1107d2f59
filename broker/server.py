"""The broker's sockets and threads around the pure `BrokerState`.

One accept thread; per connection, a reader thread and a writer thread; one
ticker thread. All of them call into the state under a single lock and
queue the replies it returns on the peers' outboxes while still holding it,
so the messages to one peer keep the order the state produced them in. The
writer threads do the actual sending outside the lock: a slow peer never
stalls the broker or the other peers. A reader handles every whole message
one read brought under one hold of the lock, with one store write for them
all (see _receive_batch).

Strangers and garbage cost little and never crash anything:
1. At most `max_connections` connections are served at once; the accept
   thread closes any more at once, so a flood costs no threads.
2. Until its handshake is done (TLS, hello, authentication) a connection
   has `handshake_timeout_s` in all, however slowly it sends, and frames
   of at most HANDSHAKE_MAX_FRAME_BYTES (a few KiB, read a few KiB at a
   time); the queue core never sees it.
3. Malformed frames, unknown or out-of-order messages close that
   connection with a logged reason; nothing else is affected.
4. A peer that stops reading is dropped once more than
   `max_outbox_bytes` wait for it and its writer has made no progress for
   as long as a missed heartbeat takes: it is not buffered for without bound.

Leadership terms and the restore at the start of each: terms.py.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import socket
import ssl
import threading
import time
from typing import Any, Iterator

from sockpool.net.connection import RECV_BYTES, Connection, address_family, join_address
from sockpool.net.tls import TLSStream
from sockpool.protocol import (
    ROLE_CLIENT,
    ROLE_OPERATOR,
    ROLE_WORKER,
    Accepted,
    Auth,
    CancelReply,
    AuthFailed,
    ConnectionLost,
    ControlReply,
    Error,
    FrameTooLarge,
    Hello,
    Jobs,
    Message,
    ProtocolError,
    RetryReply,
    check_hello,
)
from sockpool.protocol.auth import BrokerAuth, new_nonce
from sockpool.protocol.framing import pack_body, unpack_body
from sockpool.protocol.defaults import (
    HANDSHAKE_MAX_FRAME_BYTES,
    HANDSHAKE_TIMEOUT_S,
    HEARTBEAT_MISSES,
    HEARTBEAT_S,
    MAX_CONNECTIONS,
    MAX_FRAME_BYTES,
    MAX_OUTBOX_BYTES,
    RESULT_TTL_S,
    SESSION_GRACE_S,
    UNSERVED_GRACE_S,
    UNSERVED_TIMEOUT_S,
)
from sockpool.protocol.handshake import looks_like_tls
from sockpool.protocol.limits import loggable
from sockpool.protocol.messages import (
    E_AUTH,
    E_BAD_MESSAGE,
    E_DISK_FULL,
    E_FRAME_TOO_LARGE,
    E_STORE_FAILED,
    E_TLS,
    error_value,
)

from .exposure import exposure_warnings
from .limits import LimitSpec
from .peer import Peer
from .quota import Quota
from .state import BrokerState
from .terms import LeadershipTerms
from .store import GroupCommitStore, Snapshot, StoreTrouble

log = logging.getLogger("sockpool.broker")

# Heartbeats and expiry are checked at this resolution; the ticker also
# wakes when a delayed job or a retry falls due.
TICK_S = 0.1
# A reader handles the messages of one read in batches of about this many
# bytes of frames (see _receive_batch): dozens of small ones (results, acks,
# credit), or one or two submits of a few hundred jobs, per hold of the lock.
BATCH_BYTES = 16 * 1024
# accept() failing with these means the machine is out of something, not
# that the listener is broken: wait a little and go on.
_OVERLOAD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class BrokerServer(LeadershipTerms):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        name: str | None = None,
        secret: bytes | None = None,
        worker_secret: bytes | None = None,
        operator_secret: bytes | None = None,
        tls: ssl.SSLContext | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_outbox_bytes: int = MAX_OUTBOX_BYTES,
        store: GroupCommitStore | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        result_ttl_s: float = RESULT_TTL_S,
        session_grace_s: float = SESSION_GRACE_S,
        unserved_grace_s: float = UNSERVED_GRACE_S,
        unserved_timeout_s: float = UNSERVED_TIMEOUT_S,
        limits: dict[str, LimitSpec] | None = None,
        quota: Quota | None = None,
        advertise: str | None = None,
    ) -> None:
        """Bind and listen; `serve_forever` or `start` accepts.

        `secret` admits clients, and workers too unless `worker_secret` is
        given: then only it admits workers, so a client's secret cannot
        join as a worker and receive other people's jobs. None leaves that
        role open. `operator_secret` admits the operator role (every
        session's failed jobs); by default the worker secret does, the most
        trusted secret there is (a worker sees every job's arguments anyway). `tls` is a server context (sockpool.net.tls.server_context).
        `advertise` is where others reach this broker (a standby names the
        active broker's to its refused peers); by default the bound address,
        with the host name for a wildcard host.
        """
        self._listener = socket.create_server((host, port), family=address_family(host), backlog=128)
        bound = self._listener.getsockname()
        self.host, self.port = bound[0], bound[1]
        self.name = name or f"{socket.gethostname()}:{self.port}"
        self.max_frame_bytes = max_frame_bytes
        self.handshake_timeout_s = handshake_timeout_s
        self.max_connections = max_connections
        self.max_outbox_bytes = max(max_outbox_bytes, 2 * max_frame_bytes)
        # A peer whose writer is stuck this long is as gone as a silent one.
        self.stall_s = heartbeat_s * HEARTBEAT_MISSES
        self._keys: dict[str, bytes | None] = {
            ROLE_CLIENT: secret,
            ROLE_WORKER: worker_secret or secret,
            ROLE_OPERATOR: operator_secret or worker_secret or secret,
        }
        self._tls = tls
        self._state_options = dict(
            heartbeat_s=heartbeat_s, result_ttl_s=result_ttl_s, session_grace_s=session_grace_s,
            unserved_grace_s=unserved_grace_s, unserved_timeout_s=unserved_timeout_s, limits=limits,
        )
        self._quota = quota
        self.state = self._new_state()
        self.store = store
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Bumped whenever leadership is won or lost (see terms.py).
        self._generation = 0
        self.active = store is None
        # Set once every stored job is back in the queue; until then clients
        # wait at their hello (see _admit) and workers already get jobs.
        self.restored = threading.Event()
        if store is None:
            self.restored.set()
        # The rest of a restore, read while we serve (see _activate).
        self._restore_parts: Iterator[Snapshot] | None = None
        self._peers: dict[int, Peer] = {}
        self._ids = itertools.count(1)
        # Taken by the accept thread, given back by the connection's thread.
        self._slots = threading.BoundedSemaphore(max_connections)
        self._turned_away = 0
        self._last_turned_away_log = -1e9
        if store is not None:
            store.leadership.identify(self.name, advertise or self._reachable_address())
            # SQLite leads at once; on PostgreSQL this is one try, and the
            # leadership thread keeps trying once we serve.
            if store.leadership.acquire(self._stopping, wait=False):
                self._activate()

    def _reachable_address(self) -> str:
        wildcard = self.host in ("0.0.0.0", "::", "")
        return join_address(socket.gethostname(), self.port) if wildcard else self.address

    def _new_state(self) -> BrokerState:
        # A quota counts what its state holds: each state (each term of
        # leadership) gets its own, with the same limits.
        q = self._quota
        quota = None if q is None else Quota(q.max_jobs, q.max_bytes, q.max_session_jobs, q.max_session_bytes)
        return BrokerState(self.name, self.max_frame_bytes, now=time.time(), quota=quota, **self._state_options)

    @property
    def address(self) -> str:
        return join_address(self.host, self.port)

    def exposure_warnings(self) -> list[str]:
        """What is unsafe about where and how this broker listens (`broker start`
        prints these in red; an embedding program should show them too)."""
        open_roles = [role for role, key in self._keys.items() if key is None]
        return exposure_warnings(self.host, self.port, open_roles, self._tls is not None)

    def serve_forever(self) -> None:
        """Accept connections until `stop()`."""
        if self._restore_parts is not None:
            threading.Thread(target=self._restore_at_start, name="restore", daemon=True).start()
        threading.Thread(target=self._tick_loop, name="ticker", daemon=True).start()
        if self.store is not None:
            threading.Thread(target=self._lead_loop, name="leadership", daemon=True).start()
        log.info("broker %s listening on %s", self.name, self.address)
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    break
                if exc.errno in _OVERLOAD_ERRNOS:
                    log.warning("accept: %s; pausing", exc)
                    time.sleep(0.1)
                    continue
                raise
            if not self._slots.acquire(blocking=False):
                self._turn_away(sock)
                continue
            conn_id = next(self._ids)
            try:
                threading.Thread(
                    target=self._serve_connection, args=(conn_id, sock), name=f"conn-{conn_id}", daemon=True
                ).start()
            except RuntimeError as exc:  # can't start new thread: out of memory or a ulimit
                self._slots.release()
                sock.close()
                log.warning("cannot serve a new connection: %s", exc)

    def _turn_away(self, sock: socket.socket) -> None:
        """Close a connection over the limit, logging at most once a second."""
        sock.close()
        self._turned_away += 1
        now = time.monotonic()
        if now - self._last_turned_away_log >= 1.0:
            log.warning(
                "at the limit of %d connections: closed %d new connection(s) at once",
                self.max_connections, self._turned_away,
            )
            self._turned_away = 0
            self._last_turned_away_log = now

    def start(self) -> threading.Thread:
        """Serve in a background thread (embedded use, tests)."""
        thread = threading.Thread(target=self.serve_forever, name="broker", daemon=True)
        thread.start()
        return thread

    def status(self) -> dict[str, Any]:
        """The state's `status`, read under the lock (for /metrics and the
        dashboard, which have no authentication: no failure messages)."""
        with self._lock:
            # Whether this broker serves (a standby's state is empty).
            return {**self.state.status(time.time(), viewer=None), "active": self.active}

    def stop(self) -> None:
        """Stop accepting, close every connection, write out the store."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            peers = list(self._peers.values())
        for peer in peers:
            peer.close()
        if self.store is not None:
            self.store.close()

    # -- per connection --------------------------------------------------

    def _serve_connection(self, conn_id: int, sock: socket.socket) -> None:
        conn: Connection | None = None
        peer: Peer | None = None
        try:
            deadline = time.monotonic() + self.handshake_timeout_s
            conn = self._open(sock, deadline)
            if conn is None:
                return
            peer = self._admit(conn_id, conn, deadline)
            if peer is None:
                return
            while True:
                batch, bad = _receive_batch(conn)
                with self._lock:
                    if peer.generation != self._generation:
                        break  # admitted by an earlier term of leadership
                    now = time.time()
                    out: list[tuple[int, Message]] = []
                    try:
                        for msg, size in batch:
                            out += self.state.on_message(conn_id, msg, now, size)
                    finally:
                        # What the messages before a bad one produced goes out,
                        # as it did when each message was handled on its own.
                        self._emit(out)
                if bad is not None:
                    raise bad
        except FrameTooLarge as exc:
            assert conn is not None
            log.warning("closing %s: %s", conn.peer, loggable(str(exc)))
            self._send_last_words(conn, Error(E_FRAME_TOO_LARGE, str(exc)))
        except ProtocolError as exc:
            assert conn is not None
            log.warning("closing %s: protocol error: %s", conn.peer, loggable(str(exc), 500))
            self._send_last_words(conn, Error(E_BAD_MESSAGE, str(exc)))
        except ConnectionLost as exc:
            log.debug("%s", exc)
        except Exception:  # top of a thread: log, close, move on
            log.exception("connection %s failed", conn.peer if conn else conn_id)
        finally:
            try:
                self._forget(conn_id, sock, conn, peer)
            finally:
                self._slots.release()

    def _open(self, sock: socket.socket, deadline: float) -> Connection | None:
        """The connection over `sock`, TLS done if we speak TLS; None if it failed.

        The first byte says whether the peer speaks TLS; a peer on the wrong
        kind of port is told so (as well as it can understand) and closed.
        """
        where = _address(sock)
        try:
            sock.settimeout(self.handshake_timeout_s)
            head = sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            log.warning("closing %s: it sent nothing within %.0f s", where, self.handshake_timeout_s)
            return None
        except OSError as exc:
            log.debug("%s went away: %s", where, exc)
            return None
        if not head:
            return None
        peer_tls = looks_like_tls(head)
        if self._tls is None:
            if peer_tls:
                log.warning("closing %s: TLS handshake on a plaintext port (start the broker with --tls-cert)", where)
                _drain_and_close(sock)
                return None
            return Connection(sock, self.max_frame_bytes)
        if not peer_tls:
            log.warning("closing %s: plaintext peer on a TLS port (it needs --tls-ca)", where)
            # Read its hello first: closing with unread data sends a reset,
            # which can destroy the answer before the peer reads it.
            try:
                sock.settimeout(0.2)
                sock.recv(64 * 1024)
            except OSError:
                pass
            self._send_last_words(
                Connection(sock, self.max_frame_bytes),
                Error(E_TLS, "this broker speaks TLS only; connect with --tls-ca (or set SOCKPOOL_TLS_CA)"),
            )
            return None
        try:
            stream = TLSStream.server(sock, self._tls, deadline)
        except TimeoutError:
            log.warning("closing %s: no TLS handshake within %.0f s", where, self.handshake_timeout_s)
            return None
        except ssl.SSLError as exc:
            log.warning("closing %s: TLS handshake failed: %s", where, exc)
            return None
        except OSError as exc:
            log.debug("%s went away during the TLS handshake: %s", where, exc)
            return None
        return Connection(stream, self.max_frame_bytes)

    def _admit(self, conn_id: int, conn: Connection, deadline: float) -> Peer | None:
        """Run the handshake; the peer once admitted, or None if refused.

        Raises:
            ProtocolError: the peer sent something other than the handshake.
            ConnectionLost: the peer went away.
        """
        conn.decoder.set_max_frame_bytes(min(HANDSHAKE_MAX_FRAME_BYTES, self.max_frame_bytes))
        conn.recv_bytes = HANDSHAKE_MAX_FRAME_BYTES
        try:
            hello = conn.recv(deadline)
        except TimeoutError:
            log.warning("closing %s: handshake not done within %.0f s", conn.peer, self.handshake_timeout_s)
            return None
        if not isinstance(hello, Hello):
            raise ProtocolError(f"expected hello, got {hello.type!r}")
        refusal = check_hello(hello)
        if refusal is not None:
            self._refuse(conn, refusal)
            return None
        # While it answers the challenge, keep its task names as the few
        # KiB they came in, not as a list of string objects 20 times larger.
        tasks = pack_body(hello.tasks)
        hello = dataclasses.replace(hello, tasks=[])
        try:
            proof = self._authenticate(conn, hello, deadline)
        except TimeoutError:
            log.warning("closing %s: handshake not done within %.0f s", conn.peer, self.handshake_timeout_s)
            return None
        except AuthFailed as exc:
            log.warning(
                "authentication failed for %s %r from %s: %s", hello.role, loggable(hello.name), conn.peer, exc.reason
            )
            self._send_last_words(conn, Error(E_AUTH, "authentication failed"))
            return None
        conn.decoder.set_max_frame_bytes(self.max_frame_bytes)
        conn.recv_bytes = RECV_BYTES
        conn.settimeout(None)
        hello = dataclasses.replace(hello, tasks=unpack_body(tasks))
        # A standby answers at once (below); the leader's clients wait for its restore.
        if hello.role != ROLE_WORKER and self.active and not self.restored.wait(max(0.0, deadline - time.monotonic())):
            log.warning("closing %s: still restoring the store; it will retry", conn.peer)
            return None
        with self._lock:
            if not self._leading():
                self._refuse(conn, self._standby_refusal())
                return None
            out = self.state.on_hello(conn_id, hello, conn.peer, time.time())
            first = out[0][1]
            if isinstance(first, Error):
                self._refuse(conn, first)
                return None
            if proof:
                out[0] = (conn_id, dataclasses.replace(first, proof=proof))
            peer = self._peers[conn_id] = Peer(
                conn_id, conn, self.max_frame_bytes, self.max_outbox_bytes, self.stall_s, self._leading
            )
            peer.generation = self._generation
            self._emit(out)
        if hello.role == "worker":
            log.info(
                "worker %s joined from %s: %d processes, tasks %s",
                loggable(hello.name) or conn_id, conn.peer, hello.processes,
                loggable(", ".join(sorted(hello.tasks)), 2000),
            )
        else:
            log.info("%s %s connected from %s", hello.role, loggable(hello.name) or conn_id, conn.peer)
        return peer

    def _authenticate(self, conn: Connection, hello: Hello, deadline: float) -> bytes:
        """Challenge the peer if its role needs a secret; the broker's proof, or b"".

        Raises:
            AuthFailed: the peer has no secret or the wrong one.
            TimeoutError: the peer did not answer by `deadline`.
            ProtocolError: it answered with something other than `auth`.
        """
        auth = BrokerAuth(self._keys, new_nonce())
        challenge = auth.challenge(hello)
        if challenge is None:
            return b""
        conn.settimeout(max(0.001, deadline - time.monotonic()))
        conn.send(challenge)
        answer = conn.recv(deadline)
        if not isinstance(answer, Auth):
            raise ProtocolError(f"expected auth, got {answer.type!r}")
        return auth.verify(answer)

    def _refuse(self, conn: Connection, error: Error) -> None:
        log.warning("refused %s (%s): %s", conn.peer, error.code, loggable(error.message, 500))
        self._send_last_words(conn, error)

    def _send_last_words(self, conn: Connection, error: Error) -> None:
        """Tell the peer why it is being closed, if the socket still takes it."""
        try:
            conn.sock.settimeout(1.0)
            conn.send(error)
        except Exception:
            pass

    def _forget(self, conn_id: int, sock: socket.socket, conn: Connection | None, peer: Peer | None) -> None:
        if peer is not None:
            with self._lock:
                role = None
                if self._peers.pop(conn_id, None) is peer and peer.generation == self._generation:
                    role = self.state.role(conn_id)
                    self._emit(self.state.on_disconnect(conn_id, time.time()))
            peer.close()
            log.info("%s %s left", role or "peer", peer.conn.peer)
        elif conn is not None:
            conn.close()
        else:
            sock.close()

    def _emit(self, out: list[tuple[int, Message]]) -> None:
        """Send the state's replies and store its journal; call with the lock held.

        An `accepted` promises the jobs are durable, so with a store it waits
        for the commit of everything journalled up to now; so does a
        `control_reply` (a paused queue or a new schedule is on disk).
        """
        journal = self.state.take_journal()
        if self.store is None:
            self._post(out)
            return
        if any(isinstance(m, (CancelReply, RetryReply)) for _, m in out):
            # A cancel or retry is promised by its reply: nothing of it
            # (results, stops) goes out before it is on disk.
            self.store.write(journal, lambda: self._post_after_commit(out))
            return
        accepted = [(c, m) for c, m in out if isinstance(m, (Accepted, ControlReply))]
        rest = [(c, m) for c, m in out if not isinstance(m, (Accepted, ControlReply))]
        after = (lambda: self._post_after_commit(accepted)) if accepted else None
        # Post first, then wake the journal's writer, which would otherwise
        # take the GIL from this thread with a lone job's `jobs` or result
        # still to write. A job that cannot be sent (see _post) fails only
        # after the journal is handed over, so its failure's entries reach
        # the store after its `add`, never before.
        unsendable: list[tuple[int, list[Any]]] = []
        try:
            unsendable = self._post_collecting(rest)
        finally:  # the journal is written whatever posting did
            if journal or accepted:
                self.store.write(journal, after)
        self._fail_unsendable(unsendable)

    def _on_store_health(self, trouble: StoreTrouble | None) -> None:
        """On the store's writer thread: it cannot write (refuse new jobs,
        tell the clients), or writes again (accept them again)."""
        refusal = None
        if trouble is not None:
            code = E_DISK_FULL if trouble.disk_full else E_STORE_FAILED
            refusal = error_value(code, f"broker cannot store jobs: {trouble.reason}")
        with self._lock:
            self._emit(self.state.on_store_health(refusal))

    def _post_after_commit(self, out: list[tuple[int, Message]]) -> None:
        with self._lock:
            self._post(out)

    def _post(self, out: list[tuple[int, Message]]) -> None:
        """Queue messages on the peers' outboxes; call with the lock held."""
        self._fail_unsendable(self._post_collecting(out))

    def _post_collecting(self, out: list[tuple[int, Message]]) -> list[tuple[int, list[Any]]]:
        """Queue messages on the peers' outboxes; call with the lock held.
        Returns the job ids, per connection, that cannot be sent at all,
        for _fail_unsendable once the journal before them is handed over.

        A job too large for its worker's frames fails alone (the state
        says so to its submitter); the worker and the rest of the batch go on.
        A broker that no longer leads sends nothing (fencing): the next
        leader's state is the truth now.
        """
        if out and not self._leading():
            return []
        unsendable: list[tuple[int, list[Any]]] = []
        for conn_id, msg in out:
            peer = self._peers.get(conn_id)
            if peer is not None:
                unsent = peer.post(msg)
                if unsent:
                    log.error("%d job(s) too large to send to %s; failing them", len(unsent), peer.conn.peer)
                    unsendable.append((conn_id, [entry[0] for entry in unsent]))
        return unsendable

    def _fail_unsendable(self, unsendable: list[tuple[int, list[Any]]]) -> None:
        for conn_id, job_ids in unsendable:
            self._emit(self.state.on_unsendable(conn_id, job_ids, time.time()))

    def _tick_loop(self) -> None:
        wait_s = TICK_S
        while not self._stopping.wait(wait_s):
            now = time.time()
            with self._lock:
                if not self.active:
                    continue
                self._emit(self.state.tick(now))
                silent = [self._peers[c] for c in self.state.take_silent_connections(now) if c in self._peers]
                peers = list(self._peers.values())
                due = self.state.next_due()
            # Wake when the next delayed job falls due, not at the next
            # round tick: that is the lateness of a delayed job.
            wait_s = TICK_S if due is None else min(TICK_S, max(0.0, due - time.time()))
            for peer in silent:
                # Its reader thread sees the socket close and requeues its jobs.
                log.warning("%s missed its heartbeats; closing", peer.conn.peer)
                peer.close()
            monotonic = time.monotonic()
            for peer in peers:
                peer.drop_if_stalled(monotonic)


def _receive_batch(conn: Connection) -> tuple[list[tuple[Message, int]], Exception | None]:
    """The next message (waiting for it), and every whole message already
    received behind it, each with its frame's size; and the error (a
    malformed frame) that stopped the batch early, if any, for the caller
    to raise once it has handled the messages before it.

    The reader handles the batch under one hold of the broker lock, with
    one store write and one round of posts: with many peers, taking the
    lock, waking the store writer and sending once per frame cost more
    than the frames' own work, and frames come several to a read then.
    A batch stops once it holds BATCH_BYTES of frames (the rest waits in
    the decoder for the next batch, which needs no read): a read's worth
    of submits (256 KiB, thousands of jobs) from a client that got ahead
    would otherwise hold the lock, and every other peer, for all of them
    at once, and put them all before every other client's in the queues.
    """
    msg = conn.recv()
    size = conn.decoder.last_frame_bytes
    batch = [(msg, size)]
    try:
        while size < BATCH_BYTES and (msg := conn.decoder.next_message()) is not None:
            batch.append((msg, conn.decoder.last_frame_bytes))
            size += conn.decoder.last_frame_bytes
    except Exception as exc:  # the caller raises it, after the messages before it
        return batch, exc
    return batch, None


def _address(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def _drain_and_close(sock: socket.socket) -> None:
    """Close after reading what the peer already sent, so it sees an orderly
    end of stream rather than a reset that could hide our reason."""
    try:
        sock.settimeout(0.2)
        sock.recv(64 * 1024)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

