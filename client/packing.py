"""A submit on the wire, built by the client: each job entry packed once,
checked as the broker will unpack it, and the frame of a batch put
together from entries already packed, in pieces, so that large bytes
arguments are never copied (see protocol/splice.py).

Pure: no socket, no lock. `BrokerLink` (link.py) decides what goes in
which batch and sends the pieces.
"""

from __future__ import annotations

from typing import Any

from sockpool.protocol import ProtocolError, pack_body, unpack_body
from sockpool.protocol.framing import prefix
from sockpool.protocol.packed import array_header
from sockpool.protocol.splice import SPLICE_BYTES, large_value, pack_pieces

_SUBMIT_HEAD = pack_body("type") + pack_body("submit")
_SUBMIT_HEAD = b"\x83" + _SUBMIT_HEAD + pack_body("batch")
_JOBS_KEY = pack_body("jobs")


# Room in a submit body for everything but the entries.
SUBMIT_OVERHEAD_BYTES = 64


def packed_size(job: list[Any]) -> int:
    """How many bytes one job takes packed (0 if it cannot be: the batch
    path then finds out which job is at fault)."""
    try:
        return len(pack_body(job))
    except ProtocolError:
        return 0


def submit_frame(batch_id: int, entries: list[list[bytes]]) -> list[bytes]:
    """The frame of `Submit(batch_id, jobs)` from its already-packed job
    entries (each in pieces, see `pack_entry`), in pieces: equal to
    `encode(...)` joined, without packing any entry again or copying a
    large value."""
    head = b"".join([_SUBMIT_HEAD, pack_body(batch_id), _JOBS_KEY, array_header(len(entries))])
    pieces = [piece for entry in entries for piece in entry]
    length = len(head) + sum(len(p) for p in pieces)
    return [prefix(length) + head, *pieces]


def pack_entry(job: list[Any]) -> list[bytes]:
    """A job entry packed, in pieces, once checked as the broker unpacks it.

    Large bytes arguments are not copied (see `splice`); they cannot make
    the broker refuse anything, so the check unpacks the entry without them.

    Raises:
        ProtocolError: msgpack cannot encode it, or the broker would refuse it.
    """
    if not large_value(job[2]):
        entry = pack_body(job)
        unpack_body(entry)
        return [entry]
    try:
        pieces = pack_pieces(job)
    except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError...
        raise ProtocolError(f"cannot encode value: {exc}") from exc
    small_args = [b"" if type(a) is bytes and len(a) >= SPLICE_BYTES else a for a in job[2]]
    unpack_body(pack_body([job[0], job[1], small_args, *job[3:]]))
    return pieces
