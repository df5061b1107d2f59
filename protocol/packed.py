"""Arrays that cross the broker still packed.

A map chunk's arguments and its list of results are the bulk of what a
map moves, and only the two ends need them as Python values. The client
packs a chunk's arguments into a msgpack extension value of type
`PACKED_ARRAY` whose data is the packed array; a worker's pool process
packs a chunk's results the same way. The broker and the worker's main
process then carry each chunk as one opaque bytes value instead of
decoding and re-encoding thousands of items at every hop.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from .errors import ProtocolError
from .exttypes import PACKED_ARRAY
from .values import from_wire_value, pack_value, unpack_value

__all__ = ["PACKED_ARRAY", "array_header", "array_items", "array_length", "checked_pack", "is_array",
           "pack_array", "unpack_array"]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def array_items(packed: bytes) -> tuple[int, memoryview]:
    """Split a packed msgpack array into its length and its packed items.

    Raises:
        ProtocolError: `packed` does not start with an array header.
    """
    view = memoryview(packed)
    first = packed[0] if packed else -1
    try:
        if 0x90 <= first <= 0x9F:
            return first & 0x0F, view[1:]
        if first == 0xDC:
            return _U16.unpack_from(packed, 1)[0], view[3:]
        if first == 0xDD:
            return _U32.unpack_from(packed, 1)[0], view[5:]
    except struct.error as exc:
        raise ProtocolError("truncated msgpack array header") from exc
    raise ProtocolError("not a packed msgpack array")


def array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + _U16.pack(count)
    return b"\xdd" + _U32.pack(count)


def checked_pack(value: Any) -> bytes:
    """`value` packed, once unpacking it as a receiver does has shown that
    it would be accepted: a map with integer keys encodes, but is refused.
    Strict about types: a tuple here would silently arrive as a list, so
    user values must already be wire values (values.py).

    Raises:
        Exception: whatever msgpack raises (TypeError, ValueError, ...).
    """
    packed: bytes = msgpack.packb(value, use_bin_type=True, strict_types=True)
    msgpack.unpackb(packed, raw=False, strict_map_key=True)
    return packed


def pack_array(values: list[Any], *, checked: bool = False) -> msgpack.ExtType | list[Any]:
    """`values` as a packed array, tuples and big ints kept (values.py);
    unchanged if msgpack cannot encode them (or, `checked`, if the receiver
    would refuse them), so that the usual path reports the error for this
    job alone.
    """
    try:
        data = pack_value(values)
        if checked:
            unpack_value(data)
    except Exception:  # msgpack raises TypeError, ValueError, OverflowError...
        return values
    return msgpack.ExtType(PACKED_ARRAY, data)


def is_array(value: Any) -> bool:
    """A list, or a packed array whose data starts as an array does (as a
    job's `args` or a chunk's value may be). The items are not read."""
    if type(value) is list:
        return True
    if not (isinstance(value, msgpack.ExtType) and value.code == PACKED_ARRAY):
        return False
    try:
        array_items(value.data)
    except ProtocolError:
        return False
    return True


def array_length(value: list[Any] | msgpack.ExtType) -> int:
    """How many items a list or packed array holds, without unpacking them.

    Raises:
        ProtocolError: a packed array that is not one.
    """
    if isinstance(value, list):
        return len(value)
    count, items = array_items(value.data)
    # Every item takes at least a byte: a header claiming more items than
    # it has bytes (5 bytes can claim 4 billion) is counted as what was
    # really sent. The pool process that cannot read it fails that job.
    return min(count, len(items))


def unpack_array(value: Any) -> Any:
    """A packed array as a list; any other value as it is.

    Raises:
        ProtocolError: the data is not exactly one msgpack array, or holds a
            map with keys other than strings.
    """
    if not isinstance(value, msgpack.ExtType):
        return value
    if value.code != PACKED_ARRAY:
        raise ProtocolError(f"unknown msgpack extension type {value.code}")
    return from_wire_value(value)
