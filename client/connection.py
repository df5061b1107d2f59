"""The socket adapter every side uses: frames over a TCP socket.

All protocol logic lives in the sans-IO `protocol` package; this module only
moves bytes. One thread receives; any thread may send, and a lock keeps two
senders from interleaving their frames on the socket.

After any failed send or receive, or a ProtocolError, the connection is
closed for good: a half-written frame is never retried.
"""

from __future__ import annotations

import os
import socket
import threading

from protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ConnectionLost,
    Decoder,
    Error,
    HandshakeRefused,
    Hello,
    Message,
    ProtocolError,
    Welcome,
    encode,
)
from protocol.defaults import BROKER_ENV

RECV_BYTES = 256 * 1024


def parse_address(address: str | None) -> tuple[str, int]:
    """'host:port', ':port', 'host' or None (then $SOCKPOOL_BROKER, then the default).

    Raises:
        ValueError: the port is not a number.
    """
    address = address or os.environ.get(BROKER_ENV) or f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, DEFAULT_PORT
    if not port.isdigit():
        raise ValueError(f"bad broker address {address!r}: expected HOST:PORT")
    return host.strip("[]") or DEFAULT_HOST, int(port)


class Connection:
    """A connected socket that sends and receives sockpool messages."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames are written whole; waiting to coalesce them only adds latency.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.decoder = Decoder(max_frame_bytes)
        self._send_lock = threading.Lock()
        self._closed = False
        try:
            peer = sock.getpeername()
            self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        except OSError:
            self.peer = "?"

    def send(self, msg: Message) -> None:
        """Send one message.

        Raises:
            ConnectionLost: the socket failed; the connection is now closed.
            ProtocolError: the message holds a value msgpack cannot encode.
        """
        self.send_bytes(encode(msg))

    def send_bytes(self, data: bytes) -> None:
        """Send already-framed bytes (one or more whole frames)."""
        with self._send_lock:
            if self._closed:
                raise ConnectionLost(f"connection to {self.peer} is closed")
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self._close_locked()
                raise ConnectionLost(f"send to {self.peer} failed: {exc}") from exc

    def recv(self) -> Message:
        """Block until the next message arrives (honours the socket timeout).

        Raises:
            ConnectionLost: the peer closed or the socket failed.
            ProtocolError: the peer sent something malformed.
            TimeoutError: the socket timeout passed with no whole message.
        """
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            if self.decoder.at_eof:
                raise ConnectionLost(f"{self.peer} closed the connection")
            try:
                data = self.sock.recv(RECV_BYTES)
            except TimeoutError:
                raise
            except OSError as exc:
                raise ConnectionLost(f"receive from {self.peer} failed: {exc}") from exc
            self.decoder.feed(data)

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def close(self) -> None:
        with self._send_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    @property
    def closed(self) -> bool:
        return self._closed


def connect(address: str | None, hello: Hello, timeout_s: float) -> tuple[Connection, Welcome]:
    """Open a connection to the broker and complete the handshake.

    Raises:
        ConnectionLost: the broker could not be reached or hung up.
        HandshakeRefused: the broker refused our hello.
        ProtocolError: the broker answered with something unexpected.
    """
    host, port = parse_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise ConnectionLost(f"cannot reach broker at {host}:{port}: {exc}") from exc
    conn = Connection(sock)
    try:
        conn.send(hello)
        reply = conn.recv()
    except (TimeoutError, ConnectionLost, ProtocolError) as exc:
        conn.close()
        if isinstance(exc, TimeoutError):
            raise ConnectionLost(f"broker at {host}:{port} did not answer the handshake") from exc
        raise
    if isinstance(reply, Error):
        conn.close()
        raise HandshakeRefused(reply.code, reply.message)
    if not isinstance(reply, Welcome):
        conn.close()
        raise ProtocolError(f"expected welcome, got {reply.type}")
    # The broker sends frames up to its own limit; take it if it is larger.
    conn.decoder.set_max_frame_bytes(max(MAX_FRAME_BYTES, reply.max_frame_bytes))
    conn.settimeout(None)
    return conn, reply


def new_hello(role: str, **fields: object) -> Hello:
    return Hello(version=PROTOCOL_VERSION, role=role, **fields)  # type: ignore[arg-type]
