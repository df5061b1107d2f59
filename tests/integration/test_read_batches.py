"""The broker handles every whole message one read brought in one batch
(broker/server.py, _receive_batch): each is still answered, in order, and
a malformed frame behind good ones costs only what comes after it."""

from __future__ import annotations

import socket
import time

from sockpool.client import Client
from sockpool.protocol import PROTOCOL_VERSION, Accepted, Error, Hello, Ping, Pong, Welcome, encode, frame

from .cluster import start_broker, start_worker
from .rawpeer import RawPeer
from .test_attacks import submit_frame

WAIT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_messages_that_arrive_together_are_each_answered_in_order(tmp_path):
    broker, address = start_broker(tmp_path)
    try:
        with RawPeer(address) as peer:
            submits = b"".join(submit_frame([[i, "square", [i], {}, False]], batch=i) for i in range(1, 21))
            # One write: the broker reads it in one go, or in very few.
            peer.send(encode(Ping()) * 20 + submits + encode(Ping()))
            pongs, accepted = 0, []
            deadline = time.monotonic() + WAIT_S
            while (pongs < 21 or len(accepted) < 20) and time.monotonic() < deadline:
                msg = peer.recv(max(0.1, deadline - time.monotonic()))
                pongs += isinstance(msg, Pong)
                if isinstance(msg, Accepted):
                    accepted.append((msg.batch, msg.count))
                # (and a notice that no worker serves the task yet, and the broker's pings)
        assert pongs == 21
        assert accepted == [(i, 1) for i in range(1, 21)]
    finally:
        broker.stop()


def test_a_good_submit_ahead_of_a_malformed_frame_in_one_read_is_kept(tmp_path):
    """The submit before the bad frame is handled and goes to disk (it
    survives a kill -9); the bad frame closes only this connection. (Its
    `accepted` may or may not beat the close: it waits for the commit.)"""
    port = free_port()
    session = "batched-session-0123456789"
    broker, address = start_broker(tmp_path, port=port)
    try:
        with RawPeer(address, Hello(PROTOCOL_VERSION, "client", name="raw", session=session)) as peer:
            assert isinstance(peer.welcome, Welcome)
            peer.send(submit_frame([[1, "square", [9], {}, False]]) + frame(b"\xc1"))  # 0xc1: never valid msgpack
            last = peer.recv_until_closed(WAIT_S)
        assert any(isinstance(m, Error) and m.code == "bad_message" for m in last), last
        with Client(address) as other:  # everyone else is still served
            other.submit("square", 2)
            # Commits keep the order of the journal: the raw submit is on disk too.
            assert other.wait_accepted(WAIT_S)
        broker.kill()  # kill -9: what was accepted must come back
        broker, address = start_broker(tmp_path, port=port)
        worker = start_worker(tmp_path, address, 1)
        try:
            with Client(address, session=session) as owner:
                [(cid, ok, value)] = owner.collect(WAIT_S)
            assert (cid, ok, value) == (1, True, 81)
        finally:
            worker.stop()
    finally:
        broker.stop()
