"""msgpack encoding that leaves large byte strings where they are.

`msgpack.packb` copies every byte of a value into its own growing buffer
(reallocated as it grows) and then once more into the bytes it returns: a
1 MiB argument costs three copies just to be re-encoded. `pack_pieces`
writes the same encoding as a list of pieces in which each large `bytes`
value appears itself, after its header: the socket writes it from where
it lies (see `net.connection`), and nothing copies it.

It must produce exactly what `packb(value, use_bin_type=True)` produces;
anything it does not handle itself (every type but list, dict and bytes)
it hands to packb. Only values known to hold large bytes are worth it:
walking a small value in Python costs more than packb's copy.

A piece that is a large value is the caller's object, not a copy: it must
not be changed until it has been written (bytes cannot be).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

# A bytes value this large is written where it lies, not copied.
SPLICE_BYTES = 1 << 16
# Deeper than this, everything goes to packb: job arguments nest shallowly.
_MAX_DEPTH = 4

assert SPLICE_BYTES >= 1 << 16  # so that a spliced value's header is always bin 32

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def holds_large_bytes(value: Any, depth: int = 2) -> bool:
    """Whether `value` (a job's args or kwargs) holds a large bytes value
    near the top, where `pack_pieces` can leave it in place. Cheap for the
    usual arguments: it looks at a few items, not at every byte."""
    kind = type(value)
    if kind is bytes:
        return len(value) >= SPLICE_BYTES
    if depth <= 0:
        return False
    if kind is list:
        return any(holds_large_bytes(item, depth - 1) for item in value)
    if kind is dict:
        return any(holds_large_bytes(item, depth - 1) for item in value.values())
    return False


def large_value(value: Any) -> bool:
    """Whether `value` is a large bytes value or a list with one among its
    items: where jobs carry them (their args) and results (their value).
    About 0.1 µs for a small value, so it can be asked of every job."""
    if type(value) is bytes:
        return len(value) >= SPLICE_BYTES
    if type(value) is list:
        for item in value:
            if type(item) is bytes and len(item) >= SPLICE_BYTES:
                return True
    return False


def large_entry(entry: list[Any]) -> bool:
    """Whether a job or result entry carries a large bytes value at index 2
    (a job's args, a result's value), see `large_value`."""
    return large_value(entry[2])


def packed(value: Any, large: bool) -> bytes:
    """`packb(value)` as one bytes object; when `large` (the caller knows
    the value holds large bytes) with one copy of them instead of three."""
    if large:
        return b"".join(pack_pieces(value))
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def pack_pieces(value: Any) -> list[bytes]:
    """`packb(value, use_bin_type=True)` as pieces to write in order, large
    bytes values among them uncopied; small neighbours are joined.

    Raises:
        Exception: whatever msgpack raises for a value it cannot encode.
    """
    pieces: list[bytes] = []
    small: list[bytes] = []
    _walk(value, pieces, small, _MAX_DEPTH)
    if small:
        pieces.append(b"".join(small))
    return pieces


def _walk(value: Any, pieces: list[bytes], small: list[bytes], depth: int) -> None:
    kind = type(value)
    if kind is bytes and len(value) >= SPLICE_BYTES:
        small.append(_bin_header(len(value)))
        pieces.append(b"".join(small))
        small.clear()
        pieces.append(value)
    elif kind is list and depth > 0:
        small.append(_header(len(value), 0x90, b"\xdc", b"\xdd"))
        for item in value:
            _walk(item, pieces, small, depth - 1)
    elif kind is dict and depth > 0:
        small.append(_header(len(value), 0x80, b"\xde", b"\xdf"))
        for key, item in value.items():
            small.append(msgpack.packb(key, use_bin_type=True))
            _walk(item, pieces, small, depth - 1)
    else:
        small.append(msgpack.packb(value, use_bin_type=True))


def _header(count: int, fix: int, head16: bytes, head32: bytes) -> bytes:
    if count < 16:
        return bytes([fix | count])
    if count < 1 << 16:
        return head16 + _U16.pack(count)
    return head32 + _U32.pack(count)


def _bin_header(length: int) -> bytes:
    # Only large values get here: bin 32 is what msgpack writes past 64 KiB.
    return b"\xc6" + _U32.pack(length)
