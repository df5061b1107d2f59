"""The broker's sockets and threads around the pure `BrokerState`.

One accept thread; per connection, a reader thread and a writer thread; one
ticker thread. All of them call into the state under a single lock and
queue the replies it returns on the peers' outboxes while still holding it,
so the messages to one peer keep the order the state produced them in. The
writer threads do the actual sending outside the lock: a slow peer never
stalls the broker or the other peers.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
import threading
import time
from collections import deque

from client.connection import Connection
from protocol import Accepted, ConnectionLost, Error, Hello, Message, ProtocolError
from protocol.messages import encode_to_fit
from protocol.defaults import HANDSHAKE_TIMEOUT_S, HEARTBEAT_S, MAX_FRAME_BYTES, RESULT_TTL_S
from protocol.messages import E_BAD_MESSAGE

from .state import BrokerState
from .store import Store

log = logging.getLogger("sockpool.broker")

# Retries fall due and heartbeats are checked at this resolution.
TICK_S = 0.1
# accept() failing with these means the machine is out of something, not
# that the listener is broken: wait a little and go on.
_OVERLOAD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Peer:
    """One admitted connection and the thread that writes to it."""

    def __init__(self, conn_id: int, conn: Connection, max_frame_bytes: int) -> None:
        self.conn_id = conn_id
        self.conn = conn
        self.max_frame_bytes = max_frame_bytes  # what the peer accepts, after our welcome
        self._outbox: deque[Message] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._writer = threading.Thread(target=self._write_loop, name=f"write-{conn_id}", daemon=True)
        self._writer.start()

    def post(self, msg: Message) -> None:
        """Queue a message for sending; never blocks on the network."""
        with self._wake:
            self._outbox.append(msg)
            self._wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._outbox and not self.conn.closed:
                    self._wake.wait()
                batch = list(self._outbox)
                self._outbox.clear()
            if self.conn.closed:
                return
            # Everything queued goes out in one write.
            try:
                self.conn.send_bytes(b"".join(f for m in batch for f in encode_to_fit(m, self.max_frame_bytes)))
            except ProtocolError as exc:
                log.error("cannot encode a message for %s: %s", self.conn.peer, exc)
                self.conn.close()
            except ConnectionLost:
                return

    def close(self) -> None:
        self.conn.close()
        with self._wake:
            self._wake.notify()


class BrokerServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        name: str | None = None,
        store: Store | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        result_ttl_s: float = RESULT_TTL_S,
    ) -> None:
        self._listener = socket.create_server((host, port), backlog=128)
        bound = self._listener.getsockname()
        self.host, self.port = bound[0], bound[1]
        self.name = name or f"{socket.gethostname()}:{self.port}"
        self.max_frame_bytes = max_frame_bytes
        self.handshake_timeout_s = handshake_timeout_s
        self.state = BrokerState(self.name, max_frame_bytes, heartbeat_s=heartbeat_s, result_ttl_s=result_ttl_s)
        self.store = store
        if store is not None:
            jobs, results, failed = store.load()
            self.state.restore(jobs, results, failed, time.time())
            if jobs or results:
                log.info("recovered %d unfinished jobs and %d undelivered results", len(jobs), len(results))
            store.start()
        self._lock = threading.Lock()
        self._peers: dict[int, Peer] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def serve_forever(self) -> None:
        """Accept connections until `stop()`."""
        threading.Thread(target=self._tick_loop, name="ticker", daemon=True).start()
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
            conn_id = next(self._ids)
            threading.Thread(
                target=self._serve_connection, args=(conn_id, sock), name=f"conn-{conn_id}", daemon=True
            ).start()

    def start(self) -> threading.Thread:
        """Serve in a background thread (embedded use, tests)."""
        thread = threading.Thread(target=self.serve_forever, name="broker", daemon=True)
        thread.start()
        return thread

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
        conn = Connection(sock, self.max_frame_bytes)
        peer: Peer | None = None
        try:
            peer = self._admit(conn_id, conn)
            if peer is None:
                return
            while True:
                msg = conn.recv()
                with self._lock:
                    self._emit(self.state.on_message(conn_id, msg, time.time()))
        except ProtocolError as exc:
            log.warning("closing %s: protocol error: %s", conn.peer, exc)
            self._send_last_words(conn, peer, Error(E_BAD_MESSAGE, str(exc)))
        except ConnectionLost as exc:
            log.debug("%s", exc)
        except Exception:  # top of a thread: log, close, move on
            log.exception("connection %s failed", conn.peer)
        finally:
            self._forget(conn_id, conn, peer)

    def _admit(self, conn_id: int, conn: Connection) -> Peer | None:
        """Run the handshake; the peer once admitted, or None if refused."""
        conn.settimeout(self.handshake_timeout_s)
        try:
            hello = conn.recv()
        except TimeoutError:
            log.warning("closing %s: no hello within %.0f s", conn.peer, self.handshake_timeout_s)
            conn.close()
            return None
        if not isinstance(hello, Hello):
            raise ProtocolError(f"expected hello, got {hello.type!r}")
        conn.settimeout(None)
        with self._lock:
            out = self.state.on_hello(conn_id, hello, conn.peer, time.time())
            first = out[0][1]
            if isinstance(first, Error):
                log.warning("refused %s (%s): %s", conn.peer, first.code, first.message)
                self._send_last_words(conn, None, first)
                conn.close()
                return None
            peer = self._peers[conn_id] = Peer(conn_id, conn, self.max_frame_bytes)
            self._emit(out)
        if hello.role == "worker":
            log.info(
                "worker %s joined from %s: %d processes, tasks %s",
                hello.name or conn_id, conn.peer, hello.processes, ", ".join(sorted(hello.tasks)),
            )
        else:
            log.info("client %s connected from %s", hello.name or conn_id, conn.peer)
        return peer

    def _send_last_words(self, conn: Connection, peer: Peer | None, error: Error) -> None:
        """Tell the peer why it is being closed, if the socket still takes it."""
        try:
            conn.sock.settimeout(1.0)
            conn.send(error)
        except Exception:
            pass

    def _forget(self, conn_id: int, conn: Connection, peer: Peer | None) -> None:
        if peer is not None:
            with self._lock:
                role = self.state.role(conn_id)
                del self._peers[conn_id]
                self._emit(self.state.on_disconnect(conn_id, time.time()))
            peer.close()
            log.info("%s %s left", role or "peer", conn.peer)
        else:
            conn.close()

    def _emit(self, out: list[tuple[int, Message]]) -> None:
        """Send the state's replies and store its journal; call with the lock held.

        An `accepted` promises the jobs are durable, so with a store it waits
        for the commit of everything journalled up to now.
        """
        journal = self.state.take_journal()
        if self.store is None:
            self._post(out)
            return
        accepted = [(c, m) for c, m in out if isinstance(m, Accepted)]
        self._post([(c, m) for c, m in out if not isinstance(m, Accepted)])
        if journal or accepted:
            self.store.write(journal, (lambda: self._post_after_commit(accepted)) if accepted else None)

    def _post_after_commit(self, out: list[tuple[int, Message]]) -> None:
        with self._lock:
            self._post(out)

    def _post(self, out: list[tuple[int, Message]]) -> None:
        """Queue messages on the peers' outboxes; call with the lock held."""
        for conn_id, msg in out:
            peer = self._peers.get(conn_id)
            if peer is not None:
                peer.post(msg)

    def _tick_loop(self) -> None:
        while not self._stopping.wait(TICK_S):
            now = time.time()
            with self._lock:
                self._emit(self.state.tick(now))
                silent = [self._peers[c] for c in self.state.take_silent_connections(now) if c in self._peers]
            for peer in silent:
                # Its reader thread sees the socket close and requeues its jobs.
                log.warning("%s missed its heartbeats; closing", peer.conn.peer)
                peer.close()

