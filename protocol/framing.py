"""Length-prefixed msgpack frames, without sockets.

A frame is a 4-byte big-endian unsigned length followed by that many bytes
of msgpack. This module owns only the byte level: it turns Python values
into frames and a byte stream back into values. It must never touch a
socket, a thread or a clock, so every side can share it and tests can feed
it bytes directly.

Rules:
1. The length is checked against the limit as soon as the 4 prefix bytes
   are in, before any of the body is buffered, so a hostile length costs
   nothing.
2. Anything that goes wrong while decoding surfaces as `ProtocolError` and
   nothing else.
3. A large frame's body gets a buffer of its own once its length is
   known, which the socket can read straight into (`receive_buffer`/
   `received`); once whole it is handed out, and nothing it gave out is
   written again while anything but the decoder holds it (rule 5). Small
   frames share one buffer and are copied out.
4. Memory follows the bytes that arrived, never the length a peer claims.
   A frame of up to `REUSED_BUFFER_BYTES` is received into the decoder's
   one reusable buffer of that size, allocated once; a larger one into an
   anonymous mapping, whose pages cost nothing until bytes are written to
   them. (Faulting in, zeroing and unmapping fresh pages cost 0.5-0.9 ms
   of CPU per MiB received, as much as the receive itself: a 1 MiB frame
   into a fresh mapping 1.17 ms per MiB, into a reused buffer 0.27.)
   A decoder told to `keep_mapping` keeps the last such mapping and
   receives the next larger frame into it again when it fits, so a stream
   of 8 MiB arguments faults in its pages once, not once a frame; a frame
   that does not fit gets a mapping of its own length, kept in its place.
   It then holds at most the reusable buffer and one mapping no larger
   than the largest frame it received (both bounded by `max_frame_bytes`)
   for as long as it lives: worth it on a worker's one link to its
   broker, not on each of a broker's many connections, where a mapping
   kept per client would add up (and where a broker that reads faster
   only holds more queued jobs at its peak).
5. A reused buffer (the reusable one, the kept mapping) is written again
   only when nothing but the decoder refers to it: a body handed out from
   it and still held (a memoryview, a slice of one) keeps it, and the
   decoder takes a new one.
"""

from __future__ import annotations

import mmap
import struct
import sys
from typing import Any

import msgpack

from .defaults import MAX_FRAME_BYTES
from .errors import FrameTooLarge, ProtocolError

_PREFIX = struct.Struct(">I")
PREFIX_BYTES = _PREFIX.size

# Compact the receive buffer once this much of it has been consumed; deleting
# from the front after every frame would copy the rest each time.
_COMPACT_AFTER_BYTES = 1 << 16
# A frame body at least this large is received into a buffer of its own
# instead of through the shared one: no growing, compacting or copying out.
LARGE_FRAME_BYTES = 1 << 17
# A large frame's body up to this size is received into the decoder's one
# reusable buffer: a 1 MiB argument with its entry around it fits.
REUSED_BUFFER_BYTES = (1 << 20) + (1 << 16)


def pack_body(value: Any) -> bytes:
    """Encode one value as a msgpack body (no length prefix).

    Raises:
        ProtocolError: the value holds something msgpack cannot encode.
    """
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError...
        raise ProtocolError(f"cannot encode value: {exc}") from exc


def unpack_body(body: bytes | bytearray | memoryview) -> Any:
    """Decode one msgpack body.

    Raises:
        ProtocolError: the bytes are not exactly one valid msgpack value.
    """
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # unpackb can raise outside msgpack's own classes
        raise ProtocolError(f"invalid msgpack: {exc}") from exc


def frame(body: bytes) -> bytes:
    """Prefix a msgpack body with its length."""
    return _PREFIX.pack(len(body)) + body


def prefix(length: int) -> bytes:
    """The length prefix of a body of `length` bytes."""
    return _PREFIX.pack(length)


def frame_parts(body: bytes) -> list[bytes]:
    """A frame as the pieces to write: one joined piece for a small body,
    the prefix and the body itself for a large one, so that its bytes are
    not copied only to put four bytes in front of them."""
    if len(body) < LARGE_FRAME_BYTES:
        return [_PREFIX.pack(len(body)) + body]
    return [_PREFIX.pack(len(body)), body]


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    Feed it whatever `recv` returned (b"" meaning end of stream) and pull
    bodies out with `next_body()` until it returns None.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES, keep_mapping: bool = False) -> None:
        self.max_frame_bytes = max_frame_bytes
        # Keep the mapping of a body over REUSED_BUFFER_BYTES for the next (rule 4).
        self.keep_mapping = keep_mapping
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        # The body of a large frame being received: its buffer, how much of
        # it is filled, and the body's length. Bytes after it go to `_buf` again.
        self._large: bytearray | mmap.mmap | None = None
        self._large_filled = 0
        self._large_length = 0
        # The reusable buffer for bodies up to REUSED_BUFFER_BYTES, and the
        # mapping last used for a larger one (rules 4 and 5).
        self._reusable: bytearray | None = None
        self._kept_mapping: mmap.mmap | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos + self._large_filled

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes; b"" marks the end of the stream."""
        if not data:
            self._eof = True
            return
        if self._large is not None:
            take = min(self._large_length - self._large_filled, len(data))
            self._large[self._large_filled : self._large_filled + take] = data[:take]
            self._large_filled += take
            if take == len(data):
                return
            data = data[take:]
        if self._pos >= _COMPACT_AFTER_BYTES:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def receive_buffer(self) -> memoryview | None:
        """Where the socket may write the next bytes directly (`recv_into`),
        or None to `feed` what `recv` returns; report the count with `received`."""
        if self._large is None or self._large_filled == self._large_length:
            return None
        return memoryview(self._large)[self._large_filled : self._large_length]

    def received(self, count: int) -> None:
        """`count` bytes were written into the last `receive_buffer()`; 0 is end of stream."""
        if count == 0:
            self._eof = True
            return
        self._large_filled += count

    def next_body(self) -> bytes | bytearray | memoryview | None:
        """Return the next complete frame body, or None if more bytes are needed.

        The body is the caller's: the decoder never touches it again.

        Raises:
            FrameTooLarge: the length prefix exceeds the limit.
            ProtocolError: the stream ended in the middle of a frame.
        """
        if self._large is not None:
            if self._large_filled < self._large_length:
                if self._eof:
                    raise ProtocolError("truncated frame")
                return None
            large = memoryview(self._large)[: self._large_length]
            self._large, self._large_filled = None, 0
            return large
        available = len(self._buf) - self._pos
        if available >= PREFIX_BYTES:
            (length,) = _PREFIX.unpack_from(self._buf, self._pos)
            if length > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
            start = self._pos + PREFIX_BYTES
            if available >= PREFIX_BYTES + length:
                body = self._buf[start : start + length]
                self._pos = start + length
                return body
            if length >= LARGE_FRAME_BYTES and not self._eof:
                # Move what came of the body so far into its own buffer; the
                # rest is received straight into it.
                have = available - PREFIX_BYTES
                if length <= REUSED_BUFFER_BYTES:
                    self._large = self._reusable_buffer()
                else:
                    self._large = self._mapping(length) if self.keep_mapping else mmap.mmap(-1, length)
                with memoryview(self._buf) as view:
                    self._large[:have] = view[start : start + have]
                self._large_filled = have
                self._large_length = length
                del self._buf[:]
                self._pos = 0
                return None
        if self._eof and available:
            raise ProtocolError("truncated frame")
        return None

    def _reusable_buffer(self) -> bytearray:
        """The reusable buffer, or a new one if a body handed out from the
        last is still held: then any reference but ours is there."""
        # getrefcount counts its own argument: 2 means only `_reusable`.
        if self._reusable is None or sys.getrefcount(self._reusable) > 2:
            self._reusable = bytearray(REUSED_BUFFER_BYTES)
        return self._reusable

    def _mapping(self, length: int) -> mmap.mmap:
        """The kept mapping if `length` fits it and nothing but the decoder
        refers to it (rule 5); else a new mapping of `length`, kept instead."""
        kept = self._kept_mapping
        # getrefcount counts its argument and `kept`: 3 means only `_kept_mapping`.
        if kept is None or len(kept) < length or sys.getrefcount(kept) > 3:
            kept = self._kept_mapping = mmap.mmap(-1, length)
        return kept

    def peek(self, count: int) -> bytes:
        """The first `count` bytes not yet taken, for telling what a stream is."""
        if self._large is not None:
            return (prefix(self._large_length) + self._large[: min(count, self._large_filled)])[:count]
        return bytes(self._buf[self._pos : self._pos + count])

    @property
    def at_eof(self) -> bool:
        """True once the stream ended and every whole frame was taken."""
        return self._eof and len(self._buf) == self._pos and self._large is None
