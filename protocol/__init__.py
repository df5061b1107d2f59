"""sockpool's wire protocol: frames, messages and the handshake, with no I/O.

Every side (broker, worker, client) speaks through this package and nothing
here opens a socket, starts a thread or reads a clock. The specification in
prose is docs/PROTOCOL.md.
"""

from .defaults import DEFAULT_HOST, DEFAULT_PORT, MAX_FRAME_BYTES
from .errors import (
    AuthFailed,
    ConnectionLost,
    FrameTooLarge,
    HandshakeRefused,
    ProtocolError,
    SockpoolError,
)
from .framing import FrameDecoder, frame, pack_body, unpack_body
from .handshake import check_hello
from .messages import (
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_OPERATOR,
    ROLE_WORKER,
    Accepted,
    Auth,
    Challenge,
    Control,
    ControlReply,
    Ack,
    Credit,
    Drain,
    FailedJobs,
    ListFailed,
    Release,
    Error,
    Hello,
    Jobs,
    Message,
    Notice,
    Ping,
    Pong,
    Results,
    Started,
    StatusReply,
    StatusRequest,
    Submit,
    Tasks,
    Welcome,
    decode,
    encode,
    error_value,
    from_wire,
)
from .stream import Decoder
from .control import Cancel, CancelReply, Retry, RetryReply, Stop

__all__ = [
    "DEFAULT_HOST", "DEFAULT_PORT", "MAX_FRAME_BYTES", "PROTOCOL_VERSION",
    "ROLE_CLIENT", "ROLE_OPERATOR", "ROLE_WORKER", "Accepted", "Ack", "Auth", "AuthFailed", "Challenge",
    "Control", "ControlReply",
    "ConnectionLost", "Credit", "Decoder", "Drain", "Error", "FailedJobs", "FrameDecoder",
    "FrameTooLarge", "HandshakeRefused", "Hello", "Jobs", "ListFailed", "Message", "Notice", "Ping", "Release",
    "Pong", "ProtocolError", "Results", "SockpoolError", "Started", "StatusReply", "StatusRequest", "Submit", "Tasks",
    "Welcome",
    "Cancel", "CancelReply", "Retry", "RetryReply", "Stop",
    "check_hello", "decode", "encode", "error_value", "frame", "from_wire",
    "pack_body", "unpack_body",
]
