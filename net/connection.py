"""The socket adapter every side uses: frames over a TCP socket.

All protocol logic lives in the sans-IO `protocol` package; this module only
moves bytes. One thread receives; any thread may send, and a lock keeps two
senders from interleaving their frames on the socket.

After any failed send or receive, or a ProtocolError, the connection is
closed for good: a half-written frame is never retried.

`connect` runs the peer's side of the handshake: TLS first if asked for,
then hello, then (with a secret) challenge, auth and the broker's proof in
the welcome. Anything that retrying cannot fix (refused, wrong secret,
TLS on one side only, an untrusted certificate) is a HandshakeRefused.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterator

from sockpool.protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    AuthFailed,
    Challenge,
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
from sockpool.protocol.splice import SPLICE_BYTES
from sockpool.protocol.messages import encode_parts
from sockpool.protocol.auth import PeerAuth, new_nonce
from sockpool.protocol.defaults import BROKER_ENV, SECRET_ENV, TLS_CA_ENV
from sockpool.protocol.handshake import looks_like_tls
from sockpool.protocol.messages import E_AUTH, E_STANDBY, E_TLS

from .credentials import Credentials
from .tls import TLSStream

RECV_BYTES = 256 * 1024
# Most bytes one recv_into may write into a large frame's buffer.
RECV_INTO_BYTES = 4 * 1024 * 1024
# Pieces handed to one sendmsg by send_now (the kernel's IOV_MAX is 1024).
_IOV_MAX = 512
# Bytes handed to one sendall by send_frames.
SEND_PIECE_BYTES = 1024 * 1024


def _pieces(frames: list[bytes], size: int) -> Iterator[list[bytes | memoryview]]:
    """The bytes of `frames`, in order, as groups of about `size` bytes to
    write at once: small pieces joined, large ones (a body on its own, see
    `frame_parts`, or a value spliced in, see `splice`) sliced, never copied."""
    pending: list[bytes] = []
    pending_bytes = 0
    for data in frames:
        if len(data) >= SPLICE_BYTES:
            view = memoryview(data)
            for start in range(0, len(view), size):
                # What is pending (often this body's prefix) goes in the same write.
                group: list[bytes | memoryview] = [b"".join(pending)] if pending else []
                group.append(view[start : start + size])
                pending, pending_bytes = [], 0
                yield group
            continue
        pending.append(data)
        pending_bytes += len(data)
        if pending_bytes >= size:
            yield [b"".join(pending)]
            pending, pending_bytes = [], 0
    if pending:
        yield [b"".join(pending)]


def _ignore(sent_bytes: int) -> None:
    pass


def parse_address(address: str | None) -> tuple[str, int]:
    """'host:port', ':port', 'host' or None (then $SOCKPOOL_BROKER, then the default).

    Raises:
        ValueError: the port is not a number.
    """
    address = address or os.environ.get(BROKER_ENV) or f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    if address.count(":") > 1 and not address.startswith("["):
        return address, DEFAULT_PORT  # a bare IPv6 address: its colons are no port
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, DEFAULT_PORT
    if not port.isdigit():
        raise ValueError(f"bad broker address {address!r}: expected HOST:PORT")
    return host.strip("[]") or DEFAULT_HOST, int(port)


class NoActiveBroker(ConnectionLost):
    """A broker answered that it stands by (several brokers on one store) and
    none was active: a failover is under way, so retry soon, not with the
    long backoff of a broker that is down."""


def split_addresses(address: str | None) -> list[str | None]:
    """'HOST:PORT,HOST:PORT' (several brokers on one store, one active) as
    a list of single addresses; None stays [None] (then $SOCKPOOL_BROKER,
    which may be a list too, then the default)."""
    address = address or os.environ.get(BROKER_ENV) or None
    if address is None:
        return [None]
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"bad broker address {address!r}: expected HOST:PORT[,HOST:PORT...]")
    return list(parts)


def address_family(host: str) -> socket.AddressFamily:
    """The family to listen on `host` with: a colon means an IPv6 address."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def join_address(host: str, port: int) -> str:
    """'host:port', with an IPv6 host in brackets so the port stays readable."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection:
    """A connected socket that sends and receives sockpool messages."""

    def __init__(self, sock: socket.socket | TLSStream, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames are written whole; waiting to coalesce them only adds latency.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        # TLS decrypts into its own buffers; only a plain socket reads into ours.
        self._recv_into = sock.recv_into if isinstance(sock, socket.socket) else None
        self._sendmsg = sock.sendmsg if isinstance(sock, socket.socket) else None
        self.decoder = Decoder(max_frame_bytes)
        # Bytes asked of one recv: small while a stranger is being admitted,
        # so what sits in our buffer stays as small as the frames it may send.
        self.recv_bytes = RECV_BYTES
        self._send_lock = threading.Lock()
        self._closed = False
        try:
            peer = sock.getpeername()
            self.peer = join_address(peer[0], peer[1]) if isinstance(peer, tuple) else str(peer)
        except OSError:
            self.peer = "?"

    def send(self, msg: Message) -> None:
        """Send one message.

        Raises:
            ConnectionLost: the socket failed; the connection is now closed.
            ProtocolError: the message holds a value msgpack cannot encode.
        """
        parts = encode_parts(msg)
        if len(parts) == 1:
            self.send_bytes(parts[0])
        else:
            self.send_frames(parts, _ignore)

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

    def send_frames(self, frames: list[bytes], on_progress: Callable[[int], None]) -> None:
        """Send whole frames in order, `on_progress(bytes)` after each piece
        that went out, so a caller can tell a slow peer from one that reads nothing.

        Small frames are joined into one write; large ones go in pieces, all
        under the send lock, so no other sender can cut into a frame.

        Raises:
            ConnectionLost: the socket failed; the connection is now closed.
        """
        with self._send_lock:
            if self._closed:
                raise ConnectionLost(f"connection to {self.peer} is closed")
            try:
                for group in _pieces(frames, SEND_PIECE_BYTES):
                    self._write(group)
                    on_progress(sum(len(piece) for piece in group))
            except OSError as exc:
                self._close_locked()
                raise ConnectionLost(f"send to {self.peer} failed: {exc}") from exc

    def send_now(self, frames: list[bytes]) -> list[bytes | memoryview]:
        """Write as much of `frames` as the socket takes without waiting;
        what is left, in order, for a writer to send with `send_frames`.

        Never blocks: with TLS, or while another thread holds the send lock,
        it writes nothing. A socket that failed is closed, and nothing is
        left (as after a failed `send_frames`).
        """
        if self._sendmsg is None or not self._send_lock.acquire(blocking=False):
            return list(frames)
        try:
            if self._closed:
                return list(frames)
            views = [memoryview(f) for f in frames[:_IOV_MAX]]
            try:
                sent = self._sendmsg(views, (), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return list(frames)
            except OSError:
                self._close_locked()
                return []
            rest: list[bytes | memoryview] = []
            for index, view in enumerate(views):
                if sent >= len(view):
                    sent -= len(view)
                    continue
                rest.append(view[sent:] if sent else frames[index])
                rest += frames[index + 1 :]
                break
            else:
                rest = list(frames[len(views) :])
            return rest
        finally:
            self._send_lock.release()

    def _write(self, group: list[bytes | memoryview]) -> None:
        """Write every piece, in order; one gathering write on a plain
        socket (no joining copy), piece by piece through TLS."""
        if self._sendmsg is None or len(group) == 1:
            for piece in group:
                self.sock.sendall(piece)
            return
        views = [memoryview(piece) for piece in group]
        while views:
            sent = self._sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if views and sent:
                views[0] = views[0][sent:]

    def recv(self, deadline: float | None = None) -> Message:
        """Block until the next message arrives.

        Without a `deadline` (a time.monotonic() value) each socket read
        honours the socket timeout; with one, the whole message must be in
        by then, however slowly its bytes trickle in.

        Raises:
            ConnectionLost: the peer closed or the socket failed.
            ProtocolError: the peer sent something malformed.
            TimeoutError: the timeout or deadline passed with no whole message.
        """
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            if self.decoder.at_eof:
                raise ConnectionLost(f"{self.peer} closed the connection")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no whole message from {self.peer} in time")
                self.sock.settimeout(left)
            # A large frame's body is read straight into the buffer it is
            # handed out in: no copy through the decoder's shared buffer.
            into = self.decoder.receive_buffer() if self._recv_into is not None else None
            try:
                if into is not None:
                    with into:
                        count = self._recv_into(into, min(len(into), RECV_INTO_BYTES))
                else:
                    data = self.sock.recv(self.recv_bytes)
            except TimeoutError:
                raise
            except OSError as exc:
                raise ConnectionLost(f"receive from {self.peer} failed: {exc}") from exc
            if into is not None:
                self.decoder.received(count)
            else:
                self.decoder.feed(data)

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def close(self) -> None:
        with self._send_lock:
            self._close_locked()

    def abort(self) -> None:
        """Cut the connection from any thread, without waiting for a sender.

        A sender may be blocked for good on a peer that does not read, and
        holds the send lock meanwhile; shutting the socket down makes its
        call (and any blocked receive) fail, and their threads clean up.
        """
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

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


def connect(
    address: str | None, hello: Hello, timeout_s: float, credentials: Credentials | None = None
) -> tuple[Connection, Welcome]:
    """Open a connection to the broker and complete the handshake.

    `address` may list several brokers ('HOST:PORT,HOST:PORT'): they are
    tried in turn, each with `timeout_s`, and the first that is the active
    broker wins; a standby says so and is passed over.

    Raises:
        ConnectionLost: no broker in the list could be reached or is
            active (a standby counts as worth retrying: it may lead soon).
        HandshakeRefused: a broker refused us or we it (version, role,
            authentication, TLS); retrying cannot help.
        ProtocolError: a broker answered with something unexpected.
    """
    addresses = split_addresses(address)
    if len(addresses) == 1:
        return _connect_one(addresses[0], hello, timeout_s, credentials)
    reasons = []
    standby = False
    for one in addresses:
        try:
            return _connect_one(one, hello, timeout_s, credentials)
        except ConnectionLost as exc:
            reasons.append(str(exc))
            standby = standby or isinstance(exc, NoActiveBroker)
    raise (NoActiveBroker if standby else ConnectionLost)("no active broker: " + "; ".join(reasons))


def _connect_one(
    address: str | None, hello: Hello, timeout_s: float, credentials: Credentials | None = None
) -> tuple[Connection, Welcome]:
    """Connect to one broker; see `connect`.

    Raises:
        ConnectionLost: the broker could not be reached, hung up or did
            not answer in time; worth retrying.
        HandshakeRefused: the broker refused us or we refused it (version,
            role, authentication, TLS); retrying cannot help.
        ProtocolError: the broker answered with something unexpected.
    """
    credentials = credentials or Credentials()
    host, port = parse_address(address)
    where = join_address(host, port)
    deadline = time.monotonic() + timeout_s
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise ConnectionLost(f"cannot reach broker at {where}: {exc}") from exc
    stream: socket.socket | TLSStream = sock
    if credentials.tls is not None:
        try:
            stream = TLSStream.client(sock, credentials.tls, host, deadline)
        except BaseException as exc:
            sock.close()
            raise _tls_failure(where, exc) from exc
    conn = Connection(stream)
    try:
        welcome = _shake_hands(conn, hello, credentials, deadline, where)
    except BaseException:
        conn.close()
        raise
    # The broker sends frames up to its own limit; take it if it is larger.
    conn.decoder.set_max_frame_bytes(max(MAX_FRAME_BYTES, welcome.max_frame_bytes))
    conn.settimeout(None)
    return conn, welcome


def _tls_failure(where: str, exc: BaseException) -> BaseException:
    """What a failed TLS handshake means, for someone who has to fix it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return HandshakeRefused(
            E_TLS, f"the broker at {where} has a certificate that --tls-ca does not vouch for: {exc.verify_message}"
        )
    if isinstance(exc, (ssl.SSLError, ConnectionError)):
        return HandshakeRefused(
            E_TLS,
            f"TLS handshake with the broker at {where} failed ({exc}); "
            "is the broker started with --tls-cert and --tls-key?",
        )
    if isinstance(exc, TimeoutError):
        return ConnectionLost(f"the broker at {where} did not finish the TLS handshake in time")
    if isinstance(exc, OSError):
        return ConnectionLost(f"TLS handshake with the broker at {where} failed: {exc}")
    return exc


def _shake_hands(conn: Connection, hello: Hello, credentials: Credentials, deadline: float, where: str) -> Welcome:
    auth = PeerAuth(credentials.secret, hello.role, new_nonce()) if credentials.secret else None
    _send(conn, auth.hello(hello) if auth else hello, deadline)
    reply = _handshake_reply(conn, deadline, where, credentials)
    try:
        if isinstance(reply, Challenge):
            if auth is None:
                raise AuthFailed("the broker requires a secret")
            _send(conn, auth.answer(reply), deadline)
            reply = _handshake_reply(conn, deadline, where, credentials)
        if isinstance(reply, Error):
            if reply.code == E_AUTH and auth is None:
                raise AuthFailed("the broker requires a secret")
            if reply.code == E_STANDBY:
                raise NoActiveBroker(f"broker at {where}: {reply.message}")
            raise HandshakeRefused(reply.code, reply.message)
        if not isinstance(reply, Welcome):
            raise ProtocolError(f"expected welcome, got {reply.type}")
        if auth is not None:
            auth.check_welcome(reply)
    except AuthFailed as exc:
        hint = f"; pass --secret-file or set {SECRET_ENV}" if auth is None else ""
        raise HandshakeRefused(E_AUTH, f"{exc}{hint}") from exc
    return reply


def _send(conn: Connection, msg: Message, deadline: float) -> None:
    conn.settimeout(max(0.001, deadline - time.monotonic()))
    conn.send(msg)


def _handshake_reply(conn: Connection, deadline: float, where: str, credentials: Credentials) -> Any:
    try:
        return conn.recv(deadline)
    except TimeoutError as exc:
        raise ConnectionLost(f"broker at {where} did not answer the handshake") from exc
    except (ConnectionLost, ProtocolError) as exc:
        if credentials.tls is None and looks_like_tls(conn.decoder.peek(2)):
            raise HandshakeRefused(
                E_TLS, f"the broker at {where} answered in TLS; connect with --tls-ca (or set {TLS_CA_ENV})"
            ) from exc
        raise


def new_hello(role: str, **fields: object) -> Hello:
    return Hello(version=PROTOCOL_VERSION, role=role, **fields)  # type: ignore[arg-type]
