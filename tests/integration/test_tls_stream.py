"""net/tls.py: one TLS session read by one thread and written by another.

This is how every sockpool connection is used, and what an ssl.SSLSocket
must not do (OpenSSL forbids concurrent SSL_read and SSL_write on one
connection). Both ends here send megabytes while they receive megabytes,
over a real socket pair, and every byte must arrive in order.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time

import pytest

from sockpool.net.tls import TLSStream, client_context, server_context

MEGABYTES_EACH_WAY = 8
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    certs_module = pytest.importorskip("tests.certs", reason="needs the cryptography package (test extra)")
    certs = certs_module.make_certs(tmp_path_factory.mktemp("tls-stream"))
    return server_context(str(certs.cert), str(certs.key)), client_context(str(certs.ca))


def connected_pair(contexts) -> tuple[TLSStream, TLSStream]:
    server_ctx, client_ctx = contexts
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    raw_client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    raw_server, _ = listener.accept()
    listener.close()
    deadline = time.monotonic() + TIMEOUT_S
    server: list[TLSStream] = []
    thread = threading.Thread(target=lambda: server.append(TLSStream.server(raw_server, server_ctx, deadline)))
    thread.start()
    client = TLSStream.client(raw_client, client_ctx, "127.0.0.1", deadline)
    thread.join(TIMEOUT_S)
    assert server, "server handshake did not finish"
    for stream in (client, server[0]):
        stream.settimeout(TIMEOUT_S)
    return client, server[0]


def test_full_duplex_bulk_transfer_arrives_intact(contexts):
    client, server = connected_pair(contexts)
    rng = random.Random(7)
    payloads = {name: rng.randbytes(MEGABYTES_EACH_WAY * 1024 * 1024) for name in ("up", "down")}
    received: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def write(stream: TLSStream, data: bytes) -> None:
        sizes = random.Random(len(received))  # each writer its own generator
        try:
            view, at = memoryview(data), 0
            while at < len(data):
                size = sizes.choice([1, 100, 5000, 70_000, 300_000])
                stream.sendall(view[at : at + size])
                at += size
        except BaseException as exc:
            errors.append(exc)

    def read(stream: TLSStream, name: str, size: int) -> None:
        try:
            chunks, got = [], 0
            while got < size:
                chunk = stream.recv(256 * 1024)
                assert chunk, "stream ended early"
                chunks.append(chunk)
                got += len(chunk)
            received[name] = b"".join(chunks)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(client, payloads["up"])),
        threading.Thread(target=write, args=(server, payloads["down"])),
        threading.Thread(target=read, args=(server, "up", len(payloads["up"]))),
        threading.Thread(target=read, args=(client, "down", len(payloads["down"]))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    for name in payloads:
        assert hashlib.sha256(received[name]).digest() == hashlib.sha256(payloads[name]).digest(), name

    # A close is an orderly end of stream for the other side.
    client.shutdown(socket.SHUT_RDWR)
    client.close()
    assert server.recv(1024) == b""
    server.close()


def test_a_shutdown_from_another_thread_unblocks_a_reader(contexts):
    client, server = connected_pair(contexts)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(server.recv(1024))
        except OSError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.1)  # let it block in recv; the test holds either way
    server.shutdown(socket.SHUT_RDWR)
    reader.join(TIMEOUT_S)
    assert not reader.is_alive() and outcome
    client.close()
    server.close()
