"""TLS over a plain socket, safe for one reading and one writing thread.

Every side of sockpool reads a connection in one thread and writes it from
another. An `ssl.SSLSocket` must not be used that way: OpenSSL forbids
calling SSL_read and SSL_write on one SSL object at the same time, and the
`ssl` module adds no lock (python/cpython#151508 is the crash it leads to).
So this module keeps the TLS state in an `ssl.SSLObject` over memory
buffers, does the socket I/O itself, and touches the TLS state only under a
lock that is never held across a blocking call.

`TLSStream` has the few socket methods `sockpool.net.connection.Connection`
uses, so a connection does not care whether it runs over TLS.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

# Plaintext handed to the TLS layer at a time: bounds the ciphertext held in
# memory while a large batch goes out.
_WRITE_CHUNK_BYTES = 256 * 1024
_RECV_BYTES = 256 * 1024


def client_context(ca_file: str) -> ssl.SSLContext:
    """A context that trusts only the CA in `ca_file` and checks the host name.

    Raises:
        ValueError: the CA file cannot be read or is not a certificate.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS CA certificate {ca_file!r}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for the broker's certificate chain and key.

    Raises:
        ValueError: the files cannot be read, or the key does not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Nothing resumes sessions; tickets would only cost bytes.
    context.num_tickets = 0
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS certificate {cert_file!r} and key {key_file!r}: {exc}") from exc
    return context


class TLSStream:
    """A TLS session over a connected socket.

    Rules:
    1. `_tls_lock` guards the SSLObject and its buffers and is never held
       across a socket call, so a reader blocked in recv never stalls a
       writer, and the reverse.
    2. Ciphertext goes out under `_send_lock` only, in the order the TLS
       layer produced it.
    """

    def __init__(self, sock: socket.socket, sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO):
        self._sock = sock
        self._ssl = sslobj
        self._in = incoming
        self._out = outgoing
        self._tls_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._eof = False

    @classmethod
    def client(cls, sock: socket.socket, context: ssl.SSLContext, server_hostname: str, deadline: float) -> TLSStream:
        """Run the client side of the TLS handshake on `sock`.

        Raises:
            ssl.SSLError: the handshake failed (certificate, protocol, the
                peer closed: ssl.SSLEOFError).
            TimeoutError: not done by `deadline` (time.monotonic()).
            OSError: the socket failed.
        """
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        stream = cls(sock, context.wrap_bio(incoming, outgoing, server_hostname=server_hostname), incoming, outgoing)
        stream._handshake(deadline)
        return stream

    @classmethod
    def server(cls, sock: socket.socket, context: ssl.SSLContext, deadline: float) -> TLSStream:
        """Run the server side of the TLS handshake on `sock`; raises as `client`."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        stream = cls(sock, context.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing)
        stream._handshake(deadline)
        return stream

    def _handshake(self, deadline: float) -> None:
        while True:
            done = False
            failure: ssl.SSLError | None = None
            with self._tls_lock:
                try:
                    self._ssl.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    failure = exc  # still send the alert that says why
                out = self._out.read()
            if out:
                self._sock.settimeout(_remaining(deadline))
                self._sock.sendall(out)
            if failure is not None:
                raise failure
            if done:
                return
            if self._eof:
                raise ssl.SSLEOFError("the peer closed the connection during the TLS handshake")
            self._sock.settimeout(_remaining(deadline))
            data = self._sock.recv(_RECV_BYTES)
            with self._tls_lock:
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                    self._eof = True

    # -- the socket methods Connection uses --------------------------------

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes of plaintext; b"" at the end of the stream.

        Raises:
            ssl.SSLError: the peer sent something that is not valid TLS.
            TimeoutError, OSError: as socket.recv.
        """
        while True:
            with self._tls_lock:
                try:
                    data: bytes | None = self._ssl.read(bufsize)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    data = b""  # a close with or without close_notify: frames say if anything was cut
                pending = self._out.pending
            if pending:
                self._flush_if_idle()
            if data is not None:
                return data
            if self._eof:
                return b""
            raw = self._sock.recv(_RECV_BYTES)
            with self._tls_lock:
                if raw:
                    self._in.write(raw)
                else:
                    self._in.write_eof()
                    self._eof = True

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of `data`.

        Raises:
            OSError: the socket failed (ssl.SSLError included).
        """
        view = memoryview(data)
        with self._send_lock:
            for start in range(0, len(view), _WRITE_CHUNK_BYTES):
                with self._tls_lock:
                    self._ssl.write(view[start : start + _WRITE_CHUNK_BYTES])
                    out = self._out.read()
                self._sock.sendall(out)
            self._flush_locked()

    def _flush_if_idle(self) -> None:
        # TLS records the reader produced (e.g. a key update answer). If a
        # writer is busy it flushes them itself; never wait for it here, the
        # writer may be blocked on a peer that is waiting for us to read.
        if self._send_lock.acquire(blocking=False):
            try:
                self._flush_locked()
            finally:
                self._send_lock.release()

    def _flush_locked(self) -> None:
        while True:
            with self._tls_lock:
                out = self._out.read()
            if not out:
                return
            self._sock.sendall(out)

    def settimeout(self, seconds: float | None) -> None:
        self._sock.settimeout(seconds)

    def shutdown(self, how: int) -> None:
        # The raw socket only: this is how another thread's blocked call is
        # cut short, and it must not touch the TLS state that call is using.
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._sock.setsockopt(level, option, value)

    @property
    def family(self) -> int:
        return self._sock.family

    def version(self) -> str | None:
        return self._ssl.version()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the TLS handshake took too long")
    return left
