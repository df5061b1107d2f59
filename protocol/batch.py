"""Result batches that skip a decode and re-encode on the way through.

A worker's pool processes pack their results into msgpack arrays
themselves; the worker's main process then splices several of those arrays
into one `results` frame without unpacking them. This keeps per-result
Python work out of the worker's busiest thread, and checks in the pool
process, where it is cheap to recover, that every result can be encoded.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .messages import error_value
from .packed import array_header, array_items, checked_pack

_RESULTS_HEAD = b"\x83" + msgpack.packb("type") + msgpack.packb("results") + msgpack.packb("results")
_CREDIT_KEY = msgpack.packb("credit")


def results_body(packed_arrays: list[bytes], credit: int) -> bytes:
    """The body of a `results` message joining already-packed result arrays.

    Equal to `pack_body(Results(concatenated, credit).to_wire())`, without
    unpacking anything.
    """
    count = 0
    parts: list[bytes | memoryview] = []
    for packed in packed_arrays:
        n, items = array_items(packed)
        count += n
        parts.append(items)
    return b"".join(
        [_RESULTS_HEAD, array_header(count), *parts, _CREDIT_KEY, msgpack.packb(credit)]
    )


def pack_results(entries: list[list[Any]], on_unencodable: Any) -> bytes:
    """Pack result entries; an entry the receiver would refuse is replaced.

    `on_unencodable(entry, exc)` returns the entry to send instead. What
    counts is what `unpack_body` accepts, not only what msgpack can encode:
    a map with integer keys encodes fine but is refused on receipt, and it
    must not cost the worker its connection.
    """
    try:
        return checked_pack(entries)
    except Exception:
        pass
    safe = []
    for entry in entries:
        try:
            checked_pack(entry)
        except Exception as exc:
            entry = on_unencodable(entry, exc)
        safe.append(entry)
    return msgpack.packb(safe, use_bin_type=True)  # type: ignore[no-any-return]


# Room in a results body for everything but the entries: the map, its keys,
# the array header and the credit.
_RESULTS_OVERHEAD_BYTES = 64


def fit_results(packed_arrays: list[bytes], max_frame_bytes: int) -> list[list[bytes]]:
    """Group packed result arrays so each group's `results_body` fits a frame.

    A broker closes a connection that sends it a frame over its limit, and
    the worker would then run the same jobs again and again. So an array
    too big for one frame is split entry by entry, and a single result too
    big for any frame becomes a `ResultTooLarge` failure: the job ends, with
    a reason, instead of looping.
    """
    budget = max_frame_bytes - _RESULTS_OVERHEAD_BYTES
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for packed in _within(packed_arrays, budget, max_frame_bytes):
        if current and size + len(packed) > budget:
            groups.append(current)
            current, size = [], 0
        current.append(packed)
        size += len(packed)
    if current:
        groups.append(current)
    return groups


def _within(packed_arrays: list[bytes], budget: int, max_frame_bytes: int) -> list[bytes]:
    fitting = []
    for packed in packed_arrays:
        if len(packed) <= budget:
            fitting.append(packed)
            continue
        for entry in msgpack.unpackb(packed, raw=False, strict_map_key=False):
            one = msgpack.packb([entry], use_bin_type=True)
            if len(one) > budget:
                error = error_value(
                    "ResultTooLarge",
                    f"the result takes {len(one)} bytes encoded, over the broker's frame limit of {max_frame_bytes}",
                )
                one = msgpack.packb([[entry[0], False, error]], use_bin_type=True)
            fitting.append(one)
    return fitting
