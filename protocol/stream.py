"""A byte stream in, messages out: the whole receive side, without sockets.

    dec = Decoder(max_frame_bytes=MAX_FRAME_BYTES)
    dec.feed(data)                      # b"" means end of stream
    while (msg := dec.next_message()) is not None:
        handle(msg)
"""

from __future__ import annotations

from .defaults import MAX_FRAME_BYTES
from .framing import FrameDecoder
from .messages import Message, decode


class Decoder:
    """Turns received bytes into validated messages.

    Raises ProtocolError (from `next_message`) on anything malformed; after
    that the stream is unusable and the connection should be closed.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._frames = FrameDecoder(max_frame_bytes)
        # The body size of the last message returned: what it cost to send.
        self.last_frame_bytes = 0

    def set_max_frame_bytes(self, limit: int) -> None:
        """Change the limit, for frames not yet begun (after the handshake)."""
        self._frames.max_frame_bytes = limit

    def keep_mapping(self) -> None:
        """Receive each frame over the reusable buffer's size into the last
        one's mapping when it fits (FrameDecoder, rule 4): for a link that
        is one of few, as a worker's to its broker."""
        self._frames.keep_mapping = True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._frames.feed(data)

    def receive_buffer(self) -> memoryview | None:
        """See FrameDecoder.receive_buffer: where a large frame's bytes may be received to."""
        return self._frames.receive_buffer()

    def received(self, count: int) -> None:
        self._frames.received(count)

    def next_message(self) -> Message | None:
        body = self._frames.next_body()
        if body is None:
            return None
        self.last_frame_bytes = len(body)
        return decode(body)

    @property
    def max_frame_bytes(self) -> int:
        return self._frames.max_frame_bytes

    def peek(self, count: int) -> bytes:
        return self._frames.peek(count)

    @property
    def at_eof(self) -> bool:
        return self._frames.at_eof
