"""protocol/framing.py: frames in and out, byte by byte, with no sockets."""

from __future__ import annotations

import struct
import weakref

import msgpack
import pytest

from sockpool.protocol import MAX_FRAME_BYTES, FrameDecoder, ProtocolError, frame, pack_body, unpack_body
from sockpool.protocol.framing import PREFIX_BYTES


def bodies(dec: FrameDecoder) -> list[bytes]:
    out = []
    while (body := dec.next_body()) is not None:
        out.append(body)
    return out


def stream(*values: object) -> tuple[list[bytes], bytes]:
    frame_bodies = [pack_body(v) for v in values]
    return frame_bodies, b"".join(frame(b) for b in frame_bodies)


# -- encoding --------------------------------------------------------------


def test_frame_is_big_endian_length_then_body():
    assert PREFIX_BYTES == 4
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert frame(b"x" * 258)[:4] == b"\x00\x00\x01\x02"


def test_pack_body_is_msgpack_with_bin_type():
    assert pack_body({"a": [1, b"\x00"]}) == msgpack.packb({"a": [1, b"\x00"]}, use_bin_type=True)
    assert unpack_body(pack_body({"s": "é", "b": b"\xff"})) == {"s": "é", "b": b"\xff"}


@pytest.mark.parametrize("value", [object(), 2**64, {1j: 1}, {"f": lambda: 0}])
def test_pack_body_refuses_unencodable_values_with_protocol_error(value):
    with pytest.raises(ProtocolError, match="cannot encode"):
        pack_body(value)


# -- unpack_body -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing at all
        b"\xc1",  # the one never-used msgpack byte
        b"\x92\x01",  # array of 2 with one item
        b"\x01\x02",  # two values, not one
        b"\xa2\xff\xfe",  # str that is not UTF-8
        b"\x81\x01\x02",  # map with an int key
        b"\x91" * 2000 + b"\xc0",  # nested deeper than msgpack allows
    ],
)
def test_unpack_body_raises_protocol_error_on_bad_msgpack(body):
    with pytest.raises(ProtocolError, match="invalid msgpack"):
        unpack_body(body)


def test_unpack_body_accepts_memoryview():
    assert unpack_body(memoryview(pack_body([1, 2]))) == [1, 2]


# -- FrameDecoder ------------------------------------------------------------


def test_whole_stream_in_one_feed():
    expected, data = stream({"a": 1}, [1, 2, 3], "x" * 300)
    dec = FrameDecoder()
    dec.feed(data)
    assert bodies(dec) == expected
    assert dec.buffered_bytes == 0
    assert not dec.at_eof
    dec.feed(b"")
    assert dec.next_body() is None
    assert dec.at_eof


def test_byte_by_byte():
    expected, data = stream({"a": 1}, [], "x" * 300, None)
    dec = FrameDecoder()
    got = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        got += bodies(dec)
    assert got == expected
    dec.feed(b"")
    assert dec.at_eof


def test_empty_body_frame():
    dec = FrameDecoder()
    dec.feed(b"\x00\x00\x00\x00")
    assert dec.next_body() == b""
    assert dec.next_body() is None


def test_partial_frame_waits_for_more():
    expected, data = stream("hello world")
    dec = FrameDecoder()
    dec.feed(data[:3])
    assert dec.next_body() is None
    dec.feed(data[3:7])
    assert dec.next_body() is None
    assert dec.buffered_bytes == 7
    dec.feed(data[7:])
    assert dec.next_body() == expected[0]


def test_trailing_bytes_stay_buffered_until_their_frame_completes():
    expected, data = stream([1], [2])
    first_frame_end = PREFIX_BYTES + len(expected[0])
    dec = FrameDecoder()
    dec.feed(data + data[: first_frame_end - 1])  # two frames and most of a third
    assert bodies(dec) == expected
    assert dec.buffered_bytes == first_frame_end - 1
    dec.feed(data[first_frame_end - 1 : first_frame_end])  # its last byte
    assert bodies(dec) == expected[:1]
    assert dec.buffered_bytes == 0


def test_many_frames_across_buffer_compaction():
    # Well past the 64 KiB compaction point, in odd-sized pieces.
    values = [["v" * (i % 97), i] for i in range(5000)]
    expected, data = stream(*values)
    assert len(data) > 3 * (1 << 16)
    dec = FrameDecoder()
    got = []
    for start in range(0, len(data), 1013):
        dec.feed(data[start : start + 1013])
        got += bodies(dec)
    assert got == expected
    assert dec.buffered_bytes == 0


def test_frame_of_exactly_the_limit_is_accepted():
    dec = FrameDecoder(max_frame_bytes=10)
    dec.feed(frame(b"x" * 10))
    assert dec.next_body() == b"x" * 10


def test_oversized_prefix_rejected_before_the_body_arrives():
    dec = FrameDecoder(max_frame_bytes=10)
    prefix = struct.pack(">I", 11)
    dec.feed(prefix[:3])
    assert dec.next_body() is None  # 3 bytes are not a prefix yet
    dec.feed(prefix[3:])
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        dec.next_body()


def test_hostile_length_costs_nothing():
    dec = FrameDecoder()
    assert dec.max_frame_bytes == MAX_FRAME_BYTES
    dec.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match=str(0xFFFFFFFF)):
        dec.next_body()
    assert dec.buffered_bytes == 4


def test_oversized_frame_after_a_good_one():
    _, good = stream("ok")
    dec = FrameDecoder(max_frame_bytes=100)
    dec.feed(good + struct.pack(">I", 101))
    assert dec.next_body() == pack_body("ok")
    with pytest.raises(ProtocolError):
        dec.next_body()


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 9])
def test_truncated_frame_at_eof(cut):
    _, data = stream("0123456789")
    assert len(data) > 9
    dec = FrameDecoder()
    dec.feed(data[:cut])
    assert dec.next_body() is None
    dec.feed(b"")
    with pytest.raises(ProtocolError, match="truncated frame"):
        dec.next_body()
    assert not dec.at_eof


def test_whole_frames_come_out_before_the_truncation_is_reported():
    expected, data = stream(1, 2)
    dec = FrameDecoder()
    dec.feed(data + b"\x00\x00")
    dec.feed(b"")
    assert dec.next_body() == expected[0]
    assert dec.next_body() == expected[1]
    with pytest.raises(ProtocolError, match="truncated frame"):
        dec.next_body()


def test_clean_eof_between_frames():
    dec = FrameDecoder()
    dec.feed(b"")
    assert dec.next_body() is None
    assert dec.at_eof


# -- large frames: a buffer of their own ---------------------------------------


from sockpool.protocol.framing import LARGE_FRAME_BYTES, REUSED_BUFFER_BYTES, frame_parts  # noqa: E402


def large_stream() -> tuple[list[bytes], bytes]:
    return stream(b"a" * (LARGE_FRAME_BYTES + 5), {"small": 1}, b"b" * (3 * LARGE_FRAME_BYTES))


@pytest.mark.parametrize("piece", [1000, 65536, LARGE_FRAME_BYTES + 7])
def test_large_frames_fed_in_pieces(piece):
    expected, data = large_stream()
    dec = FrameDecoder()
    out = []
    for i in range(0, len(data), piece):
        dec.feed(data[i : i + piece])
        out += bodies(dec)
    assert out == expected
    assert dec.buffered_bytes == 0


def test_large_frame_received_into_its_own_buffer():
    """What a socket's recv_into does: write into receive_buffer(), report the count."""
    expected, data = large_stream()
    assert receive_all(FrameDecoder(), data) == [unpack_body(body) for body in expected]


def test_a_body_handed_out_is_never_written_again():
    _, data = stream(b"a" * LARGE_FRAME_BYTES, b"b" * LARGE_FRAME_BYTES)
    dec = FrameDecoder()
    dec.feed(data[: len(data) // 2 + 10])
    first = dec.next_body()
    kept = bytes(first)
    dec.feed(data[len(data) // 2 + 10 :])
    second = dec.next_body()
    assert first == kept and first is not second and second[-1:] == b"b"


def test_truncated_large_frame_raises_protocol_error():
    _, data = stream(b"a" * (2 * LARGE_FRAME_BYTES))
    dec = FrameDecoder()
    dec.feed(data[: LARGE_FRAME_BYTES])
    assert dec.next_body() is None
    dec.feed(b"")
    with pytest.raises(ProtocolError, match="truncated"):
        dec.next_body()


def test_peek_sees_the_prefix_of_a_large_frame():
    _, data = stream(b"a" * (2 * LARGE_FRAME_BYTES))
    dec = FrameDecoder()
    dec.feed(data[:100])
    assert dec.next_body() is None
    assert dec.peek(6) == data[:6]


def test_frame_parts_join_to_the_frame():
    for body in (b"", b"abc", b"x" * LARGE_FRAME_BYTES):
        parts = frame_parts(body)
        assert b"".join(parts) == frame(body)
        assert len(parts) == (2 if len(body) >= LARGE_FRAME_BYTES else 1)


def receive_all(dec: FrameDecoder, data: bytes, piece: int = 50_000) -> list:
    """What Connection.recv does: recv_into receive_buffer() when there is
    one, feed() otherwise; each body decoded, then dropped."""
    out, pos = [], 0
    while pos < len(data):
        into = dec.receive_buffer()
        if into is None:
            dec.feed(data[pos : pos + 3000])
            pos += 3000
        else:
            count = min(len(into), piece, len(data) - pos)
            into[:count] = data[pos : pos + count]
            into.release()
            dec.received(count)
            pos += count
        while (body := dec.next_body()) is not None:
            out.append(unpack_body(body))
    return out


def test_frames_around_the_reused_buffers_size_arrive_whole():
    sizes = [LARGE_FRAME_BYTES, REUSED_BUFFER_BYTES - 10, REUSED_BUFFER_BYTES + 10, LARGE_FRAME_BYTES, 3 << 20]
    values = [bytes([i]) * n for i, n in enumerate(sizes)]
    _, data = stream(*values)
    assert receive_all(FrameDecoder(), data) == values


def test_a_body_no_longer_held_leaves_its_buffer_to_the_next_frame():
    _, data = stream(b"a" * LARGE_FRAME_BYTES, b"b" * LARGE_FRAME_BYTES)
    half = len(data) // 2
    dec = FrameDecoder()

    def receive(part: bytes):
        dec.feed(part[:3000])
        assert dec.next_body() is None
        with dec.receive_buffer() as into:
            into[: len(part) - 3000] = part[3000:]
        dec.received(len(part) - 3000)
        return dec.next_body()

    first = receive(data[:half])
    assert bytes(first) == pack_body(b"a" * LARGE_FRAME_BYTES)
    buffer_id = id(first.obj)
    del first  # decoded and dropped, as a connection does
    second = receive(data[half:])
    assert id(second.obj) == buffer_id and bytes(second) == pack_body(b"b" * LARGE_FRAME_BYTES)


def test_a_body_still_held_keeps_its_buffer():
    _, data = stream(b"a" * LARGE_FRAME_BYTES, b"b" * LARGE_FRAME_BYTES)
    dec = FrameDecoder()
    held = []
    for part in (data[: len(data) // 2], data[len(data) // 2 :]):
        dec.feed(part[:3000])
        assert dec.next_body() is None
        with dec.receive_buffer() as into:
            into[: len(part) - 3000] = part[3000:]
        dec.received(len(part) - 3000)
        held.append(dec.next_body())
    assert held[0].obj is not held[1].obj
    assert [bytes(b) for b in held] == [pack_body(b"a" * LARGE_FRAME_BYTES), pack_body(b"b" * LARGE_FRAME_BYTES)]


# -- frames over the reused buffer's size: the kept mapping ---------------------

OVER = REUSED_BUFFER_BYTES + 1000


def receive_whole(dec: FrameDecoder, data: bytes):
    """One frame, as a connection receives it: the start fed, the rest
    received straight into the decoder's buffer; its body handed out."""
    dec.feed(data[:3000])
    assert dec.next_body() is None
    with dec.receive_buffer() as into:
        into[: len(data) - 3000] = data[3000:]
    dec.received(len(data) - 3000)
    return dec.next_body()


def test_a_larger_frame_no_longer_held_leaves_its_mapping_to_the_next():
    dec = FrameDecoder(keep_mapping=True)
    first = receive_whole(dec, frame(pack_body(b"a" * OVER)))
    assert unpack_body(first) == b"a" * OVER
    mapping = weakref.ref(first.obj)
    del first  # decoded and dropped, as a connection does
    # A smaller one (still over the reused buffer's size) fits the same mapping.
    second = receive_whole(dec, frame(pack_body(b"b" * (OVER - 500))))
    assert second.obj is mapping() and unpack_body(second) == b"b" * (OVER - 500)


def test_a_larger_frame_still_held_keeps_its_mapping_unwritten():
    dec = FrameDecoder(keep_mapping=True)
    first = receive_whole(dec, frame(pack_body(b"a" * OVER)))
    kept = bytes(first)
    second = receive_whole(dec, frame(pack_body(b"b" * OVER)))
    assert first.obj is not second.obj
    assert bytes(first) == kept and unpack_body(second) == b"b" * OVER
    # A slice of a body holds its mapping as well as the body does.
    part = second[100:200]
    del first, second
    third = receive_whole(dec, frame(pack_body(b"c" * OVER)))
    assert part.obj is not third.obj and bytes(part) == pack_body(b"b" * OVER)[100:200]


def test_a_frame_larger_than_the_kept_mapping_gets_one_of_its_own():
    dec = FrameDecoder(keep_mapping=True)
    first = receive_whole(dec, frame(pack_body(b"a" * OVER)))
    first_mapping = weakref.ref(first.obj)
    del first
    bigger = receive_whole(dec, frame(pack_body(b"b" * (2 * OVER))))
    assert first_mapping() is None and unpack_body(bigger) == b"b" * (2 * OVER)
    bigger_mapping = weakref.ref(bigger.obj)
    del bigger
    # That one is kept now: a smaller frame after it goes into it.
    again = receive_whole(dec, frame(pack_body(b"c" * OVER)))
    assert again.obj is bigger_mapping() and unpack_body(again) == b"c" * OVER


def test_frames_of_every_size_over_the_reused_buffer_arrive_whole_through_the_kept_mapping():
    # Larger, smaller, larger again: no frame sees another's bytes.
    sizes = [3 << 20, OVER, 2 << 20, REUSED_BUFFER_BYTES - 10, 3 << 20, 1 << 22]
    values = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    _, data = stream(*values)
    assert receive_all(FrameDecoder(keep_mapping=True), data) == values


def test_a_decoder_not_told_to_keep_its_mapping_takes_a_new_one_each_frame():
    dec = FrameDecoder()
    first = receive_whole(dec, frame(pack_body(b"a" * OVER)))
    mapping = weakref.ref(first.obj)
    del first
    assert mapping() is None  # gone with its body: nothing kept it
    second = receive_whole(dec, frame(pack_body(b"b" * OVER)))
    assert unpack_body(second) == b"b" * OVER
