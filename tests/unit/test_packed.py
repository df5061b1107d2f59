"""protocol/packed.py: arrays that cross the broker without being decoded."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockpool.protocol import ProtocolError, Submit, decode, encode
from sockpool.protocol.messages import check_job
from sockpool.protocol.packed import PACKED_ARRAY, array_header, array_items, array_length, is_array, pack_array, unpack_array


def packed(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# -- array_items / array_header ------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 65535, 65536, 70000])
def test_array_items_splits_header_from_items(count):
    items = list(range(count))
    n, view = array_items(packed(items))
    assert n == count
    assert isinstance(view, memoryview)
    assert bytes(view) == b"".join(msgpack.packb(i) for i in items)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536, 1 << 20])
def test_array_header_matches_msgpack(count):
    header = array_header(count)
    assert len(header) == (1 if count < 16 else 3 if count < 65536 else 5)
    # msgpack's own header for an array of `count` nils.
    assert msgpack.packb([None] * count)[: len(header)] == header


@pytest.mark.parametrize(
    "value",
    [None, 0, 1, -1, "str", b"bin", {"a": 1}, {}, 1.5, True],
    ids=repr,
)
def test_array_items_refuses_non_arrays(value):
    with pytest.raises(ProtocolError, match="not a packed msgpack array"):
        array_items(packed(value))  # type: ignore[arg-type]


def test_array_items_refuses_empty_input():
    with pytest.raises(ProtocolError):
        array_items(b"")


# -- pack_array / unpack_array ------------------------------------------------------


@pytest.mark.parametrize("values", [[], [1], list(range(70000)), ["a", b"b", None, 2.5, [1, [2]], {"k": {"n": 1}}]], ids=len)
def test_pack_array_round_trips_through_a_message(values):
    """What a client sends is what the pool process unpacks, across a
    decode and re-encode by the broker in between."""
    args = pack_array(values)
    assert isinstance(args, msgpack.ExtType) and args.code == PACKED_ARRAY
    assert array_length(args) == len(values)
    relayed = decode(encode(Submit(1, [[7, "square", args, {}, True]]))[4:])
    assert isinstance(relayed, Submit)
    assert relayed.jobs[0][2] == args  # passed on as it came, not unpacked
    assert unpack_array(relayed.jobs[0][2]) == values


def test_pack_array_leaves_what_msgpack_cannot_encode_as_a_list():
    values = [1, object()]
    assert pack_array(values) is values


def test_checked_pack_array_leaves_integer_map_keys_as_a_list():
    """The receiver would refuse them; left unpacked, the usual path turns
    them into a failure of this one job."""
    values = [{1: "a"}]
    assert pack_array(values, checked=True) is values
    assert isinstance(pack_array(values), msgpack.ExtType)


def test_unpack_array_passes_other_values_through():
    for value in ([1, 2], {"type": "E"}, 3, None):
        assert unpack_array(value) is value


@pytest.mark.parametrize(
    "ext,match",
    [
        (msgpack.ExtType(PACKED_ARRAY, packed({1: "a"}) ), "invalid packed array"),
        (msgpack.ExtType(PACKED_ARRAY, packed([{1: "a"}])), "invalid packed array"),
        (msgpack.ExtType(PACKED_ARRAY, packed([1, 2]) + b"\x01"), "invalid packed array"),
        (msgpack.ExtType(PACKED_ARRAY, b"\xdd\xff\xff\xff\xff"), "invalid packed array"),
        (msgpack.ExtType(PACKED_ARRAY, packed("text")), "not an array"),
        (msgpack.ExtType(5, packed([1])), "unknown msgpack extension type 5"),
    ],
    ids=["map", "int-keys", "trailing", "truncated", "string", "other-code"],
)
def test_unpack_array_refuses_what_is_not_one_array(ext, match):
    with pytest.raises(ProtocolError, match=match):
        unpack_array(ext)


def test_is_array():
    assert is_array([]) and is_array(msgpack.ExtType(PACKED_ARRAY, packed([])))
    assert not is_array(msgpack.ExtType(2, packed([]))) and not is_array((1, 2)) and not is_array(b"\x90")


# -- check_job -----------------------------------------------------------------------


def test_check_job_takes_packed_args():
    check_job([1, "square", pack_array([1, 2, 3]), {}, True])


@pytest.mark.parametrize(
    "args",
    [msgpack.ExtType(PACKED_ARRAY, packed("no")), msgpack.ExtType(PACKED_ARRAY, b""), msgpack.ExtType(9, packed([1]))],
    ids=["string", "empty", "other-code"],
)
def test_check_job_refuses_a_packed_value_that_is_no_array(args):
    with pytest.raises(ProtocolError, match="malformed job entry"):
        check_job([1, "square", args, {}, True])


# -- any bytes at all ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_packed_data_yields_a_list_or_the_protocol_error(data):
    """What a peer puts in a packed array reaches the pool process unread;
    whatever it is, reading it is one job's ProtocolError, nothing worse."""
    value = msgpack.ExtType(PACKED_ARRAY, data)
    try:
        items = unpack_array(value)
    except ProtocolError:
        return
    assert type(items) is list
    assert array_length(value) == len(items)
