"""Connection.send_now: what the socket takes at once, the rest in order for the writer."""

from __future__ import annotations

import socket
import threading

from sockpool.net.connection import Connection


def test_send_now_never_blocks_and_the_rest_follows_in_order():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn = Connection(a)
    frames = [bytes([i % 251]) * 10_000 for i in range(200)]  # far more than the socket buffer
    rest = conn.send_now(frames)
    assert rest, "a socket buffer of a few KiB cannot take 2 MB at once"
    received = bytearray()

    def read_all() -> None:
        b.settimeout(10)
        while len(received) < 2_000_000:
            chunk = b.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    conn.send_frames(rest, lambda n: None)
    reader.join(10)
    assert bytes(received) == b"".join(frames)
    conn.close()
    b.close()


def test_send_now_writes_nothing_while_another_sender_holds_the_lock():
    a, b = socket.socketpair()
    conn = Connection(a)
    with conn._send_lock:
        assert conn.send_now([b"abc"]) == [b"abc"]
    assert conn.send_now([b"abc", b"de"]) == []
    b.settimeout(5)
    assert b.recv(10) == b"abcde"
    conn.close()
    b.close()
