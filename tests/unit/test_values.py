"""protocol/values.py: tuples and ints of any size travel as they are."""

from __future__ import annotations

import collections
import enum

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockpool.protocol import ProtocolError, Submit, decode, encode
from sockpool.protocol.exttypes import BIGINT, MAX_EXT_DEPTH, PACKED_VALUE, TUPLE
from sockpool.protocol.packed import is_array, pack_array, unpack_array
from sockpool.protocol.values import (
    from_wire_error,
    from_wire_kwargs,
    from_wire_value,
    is_plain,
    unpack_value,
    wire_args,
    wire_kwargs,
    wire_value,
)


def relay(value):
    """What a broker passing the value on (decode, re-encode) hands over."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=True)


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


VALUES = [
    (1, 2), (), ((),), [1, (2, (3, [4, (5,)]))], 2**64, -(2**63) - 1, pow(39, 39), -pow(7, 99),
    {"a": (1, 2**100), "b": [()]}, [2**63 - 1, -(2**63), 2**64 - 1], [[]], "text", b"bytes", None, 1.5, True,
    (divmod(1, 2), divmod(1, 3)),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_arrives_as_it_was_sent(value):
    back = from_wire_value(relay(wire_value(value)))
    assert same(back, value), (value, back)


def test_plain_values_travel_as_plain_msgpack():
    for value in [1, "x", [1, [2, "3"]], {"k": [1.5, None]}, 2**64 - 1, -(2**63)]:
        assert wire_value(value) is value
    assert wire_args([1, 2]) == [1, 2] and wire_kwargs({"a": 1}) == {"a": 1}
    assert type(wire_value((1,))) is msgpack.ExtType and wire_value((1,)).code == TUPLE
    assert wire_value([(1,)]).code == PACKED_VALUE
    assert not is_plain(2**64) and not is_plain([()])


def test_arguments_and_keyword_arguments_keep_their_types_through_a_broker():
    args, kwargs = wire_args([1, (2, 3), 2**80]), wire_kwargs({"pair": ("a", "b"), "n": 7, "big": -(2**90)})
    job = decode(encode(Submit(1, [[1, "t", args, kwargs, False]]))[4:]).jobs[0]  # type: ignore[attr-defined]
    assert is_array(job[2])  # the broker's own check of a job entry still holds
    assert same(unpack_array(job[2]), [1, (2, 3), 2**80])
    assert same(from_wire_kwargs(job[3]), {"pair": ("a", "b"), "n": 7, "big": -(2**90)})


def test_map_chunks_keep_tuples_and_big_ints():
    values = [(i, 2**70 + i) for i in range(20)]
    assert same(unpack_array(relay(pack_array(values, checked=True))), values)


def test_subclasses_travel_as_their_base_type():
    Point = collections.namedtuple("Point", "x y")

    class Colour(enum.IntEnum):
        RED = 1

    back = from_wire_value(relay(wire_value([Point(1, 2), Colour.RED, collections.OrderedDict(a=1)])))
    assert same(back, [(1, 2), 1, {"a": 1}])


def test_what_msgpack_cannot_carry_is_still_refused():
    for value in [object(), [1, {2, 3}], (1, object())]:
        with pytest.raises(TypeError):
            wire_value(value)


def test_nesting_is_bounded():
    deep: tuple = ()
    for _ in range(MAX_EXT_DEPTH - 1):
        deep = (deep,)
    assert same(from_wire_value(relay(wire_value(deep))), deep)
    with pytest.raises(ProtocolError, match="nest more than"):
        from_wire_value(relay(wire_value((deep,))))


@pytest.mark.parametrize(
    "ext",
    [
        msgpack.ExtType(TUPLE, b"\x01"),  # not an array
        msgpack.ExtType(TUPLE, b"\x92\x01"),  # truncated
        msgpack.ExtType(TUPLE, b"\x91\x01\x02"),  # trailing bytes
        msgpack.ExtType(PACKED_VALUE, msgpack.packb({1: "int key"})),
        msgpack.ExtType(BIGINT, b""),
        msgpack.ExtType(99, b"\x90"),
        msgpack.ExtType(TUPLE, msgpack.packb([msgpack.ExtType(99, b"")])),
    ],
)
def test_bad_extension_values_are_a_protocol_error(ext):
    with pytest.raises(ProtocolError):
        from_wire_value(ext)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=4))
def test_any_bytes_give_a_value_or_a_protocol_error(data, code):
    try:
        from_wire_value(msgpack.ExtType(code, data))
    except ProtocolError:
        pass
    try:
        unpack_value(data)
    except ProtocolError:
        pass


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=20,
))
def test_round_trip_property(value):
    assert same(from_wire_value(relay(wire_value(value))), value)


def test_error_maps_decode_their_args_and_items():
    item_error = {"type": "KeyError", "message": "k", "args": wire_value([(4,)])}
    error = {"type": "ValueError", "message": "m", "args": wire_value([(1, 2)]),
             "items": [[True, wire_value((3,))], [False, item_error], [True, 5]]}
    back = from_wire_error(relay(error))
    assert same(back["args"], [(1, 2)])
    assert same(back["items"], [[True, (3,)], [False, {**item_error, "args": [(4,)]}], [True, 5]])
