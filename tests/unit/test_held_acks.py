"""The client's held-back acks (client/acks.py): held until the next frame,
never more than MAX_HELD of them."""

from __future__ import annotations

from sockpool.client.acks import MAX_HELD, HeldAcks
from sockpool.protocol import Ack
from sockpool.protocol.messages import decode
from sockpool.protocol.framing import FrameDecoder


def frame_message(frames: list[bytes]) -> object:
    dec = FrameDecoder()
    dec.feed(b"".join(frames))
    body = dec.next_body()
    assert body is not None and dec.next_body() is None
    return decode(body)


def test_held_ids_go_out_in_one_ack_frame_once():
    held = HeldAcks()
    assert held.hold([1]) == []
    assert held.hold([2, 3]) == []
    assert frame_message(held.take_frames()) == Ack(ids=[1, 2, 3])
    assert held.take_frames() == []


def test_taking_with_ids_sends_the_held_first():
    held = HeldAcks()
    held.hold([4])
    assert held.take([5, 6]) == [4, 5, 6]
    assert held.take() == []
    assert held.take_frames() == []  # nothing is acknowledged twice


def test_past_the_bound_everything_held_goes_at_once():
    held = HeldAcks()
    assert held.hold(list(range(MAX_HELD))) == []
    assert held.hold([MAX_HELD]) == list(range(MAX_HELD + 1))
    assert held.take_frames() == []
