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
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from .defaults import MAX_FRAME_BYTES
from .errors import FrameTooLarge, ProtocolError

_PREFIX = struct.Struct(">I")
PREFIX_BYTES = _PREFIX.size

# Compact the receive buffer once this much of it has been consumed; deleting
# from the front after every frame would copy the rest each time.
_COMPACT_AFTER_BYTES = 1 << 16


def pack_body(value: Any) -> bytes:
    """Encode one value as a msgpack body (no length prefix).

    Raises:
        ProtocolError: the value holds something msgpack cannot encode.
    """
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError...
        raise ProtocolError(f"cannot encode value: {exc}") from exc


def unpack_body(body: bytes | memoryview) -> Any:
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


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    Feed it whatever `recv` returned (b"" meaning end of stream) and pull
    bodies out with `next_body()` until it returns None.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Add received bytes; b"" marks the end of the stream."""
        if not data:
            self._eof = True
            return
        if self._pos >= _COMPACT_AFTER_BYTES:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_body(self) -> bytes | None:
        """Return the next complete frame body, or None if more bytes are needed.

        Raises:
            FrameTooLarge: the length prefix exceeds the limit.
            ProtocolError: the stream ended in the middle of a frame.
        """
        available = len(self._buf) - self._pos
        if available >= PREFIX_BYTES:
            (length,) = _PREFIX.unpack_from(self._buf, self._pos)
            if length > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
            if available >= PREFIX_BYTES + length:
                start = self._pos + PREFIX_BYTES
                body = bytes(self._buf[start : start + length])
                self._pos = start + length
                return body
        if self._eof and available:
            raise ProtocolError("truncated frame")
        return None

    def peek(self, count: int) -> bytes:
        """The first `count` bytes not yet taken, for telling what a stream is."""
        return bytes(self._buf[self._pos : self._pos + count])

    @property
    def at_eof(self) -> bool:
        """True once the stream ended and every whole frame was taken."""
        return self._eof and len(self._buf) == self._pos
