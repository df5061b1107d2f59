"""A peer that speaks the wire by hand, for the attacks in the security tests.

It sends exactly the bytes a test gives it (frames our own encoder would
never build) and reads the broker's answers with the real decoder.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import msgpack

from sockpool.net.connection import Connection, parse_address
from sockpool.protocol import (
    PROTOCOL_VERSION,
    ConnectionLost,
    Hello,
    Message,
    Ping,
    ProtocolError,
    Welcome,
    encode,
    frame,
)

TIMEOUT_S = 10.0


def raw_frame(wire: Any) -> bytes:
    """A frame of any msgpack value, bypassing every check of ours."""
    return frame(msgpack.packb(wire, use_bin_type=True))


class RawPeer:
    def __init__(self, address: str, hello: Hello | None = None, *, shake: bool = True) -> None:
        host, port = parse_address(address)
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
        self.conn = Connection(self.sock, 1 << 30)
        self.welcome: Welcome | None = None
        if shake:
            self.send(hello or Hello(PROTOCOL_VERSION, "client", name="raw"))
            reply = self.recv()
            assert isinstance(reply, Welcome), reply
            self.welcome = reply

    def send(self, msg: Message | bytes) -> None:
        self.sock.sendall(msg if isinstance(msg, bytes) else encode(msg))

    def recv(self, timeout_s: float = TIMEOUT_S) -> Message:
        return self.conn.recv(time.monotonic() + timeout_s)

    def recv_replies(self, count: int, timeout_s: float = TIMEOUT_S) -> list[Message]:
        """The next `count` messages that are not the broker's heartbeats
        (a loaded machine can slip a ping in between two replies)."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            msg = self.conn.recv(deadline)
            if not isinstance(msg, Ping):
                got.append(msg)
        return got

    def recv_until_closed(self, timeout_s: float = TIMEOUT_S) -> list[Message]:
        """Everything the broker sends until it closes the connection.

        Raises:
            TimeoutError: the broker kept it open past `timeout_s`.
        """
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                got.append(self.conn.recv(deadline))
            except (ConnectionLost, ProtocolError):
                return got

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
