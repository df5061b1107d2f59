"""protocol/splice.py: the same bytes as packb, large values left in place."""

from __future__ import annotations

import msgpack
import pytest

from sockpool.protocol import Jobs, Results, encode
from sockpool.protocol.messages import encode_parts
from sockpool.protocol.packed import pack_array
from sockpool.protocol.splice import SPLICE_BYTES, holds_large_bytes, large_entry, pack_pieces

BIG = b"\x01" * SPLICE_BYTES
BIGGER = bytes(range(256)) * (SPLICE_BYTES // 64)


@pytest.mark.parametrize(
    "value",
    [
        BIG,
        [BIG],
        [1, "a", BIG, {"k": BIGGER, "n": None}, [BIG, [BIG]], 2.5, True],
        {"a": [BIG] * 17, "b": list(range(70_000))},
        [[[[[BIG]]]]],  # deeper than the walk: packb does that part
        [b"small", "é" * 10, -(2**40), 2**63, pack_array([1, 2])],
        list(range(20)),
        {str(i): i for i in range(20)},
    ],
)
def test_pieces_join_to_exactly_what_packb_writes(value):
    pieces = pack_pieces(value)
    assert b"".join(pieces) == msgpack.packb(value, use_bin_type=True)


def test_large_values_are_the_callers_objects_not_copies():
    pieces = pack_pieces([1, BIG, {"k": BIGGER}])
    assert any(p is BIG for p in pieces) and any(p is BIGGER for p in pieces)


def test_unencodable_values_raise_as_packb_does():
    with pytest.raises(TypeError):
        pack_pieces([BIG, object()])


def test_which_entries_are_worth_splicing():
    assert large_entry([1, "t", [BIG], {}, False])
    assert large_entry([1, True, BIG])
    assert not large_entry([1, "t", [b"x" * (SPLICE_BYTES - 1)], {}, False])
    assert not large_entry([1, "t", pack_array([BIG]), {}, True])
    assert holds_large_bytes({"a": BIG}) and not holds_large_bytes([[[BIG]]])


@pytest.mark.parametrize(
    "msg",
    [
        Jobs([[1, "t", [BIG], {}, False], [2, "t", [3], {"a": BIGGER}, False, {"retries": 1}], [3, "t", [BIG, 4], {}, False]]),
        Results([[1, True, BIG], [2, False, {"type": "E", "message": "m", "traceback": ""}], [3, True, [BIGGER]]], 5),
        Results([[1, True, BIG]]),
        Jobs([[7, "t", [1], {}, False]]),
        Jobs([[1, "t", [BIG], {}, False], [2, "t", [BIG], {}, False]], holders=[1], after=[[2, 1]]),
    ],
)
def test_encode_parts_joins_to_encode(msg):
    parts = encode_parts(msg)
    assert b"".join(parts) == encode(msg)
    if any(large_entry(e) for e in (msg.jobs if isinstance(msg, Jobs) else msg.results)):
        assert any(p is BIG or p is BIGGER for p in parts)


def test_packed_is_packb_whether_or_not_large():
    from sockpool.protocol.splice import packed

    for value in ([[BIG], {}, False, None], [[1], {}, False, None], BIG, {"a": 1}):
        assert packed(value, True) == packed(value, False) == msgpack.packb(value, use_bin_type=True)
