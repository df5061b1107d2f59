"""The error classes shared by every side; each one says who is at fault."""


class SockpoolError(Exception):
    """Base class of every error sockpool raises on purpose."""


class ProtocolError(SockpoolError):
    """The peer sent bytes or messages we cannot accept; close the connection."""


class FrameTooLarge(ProtocolError):
    """A frame's length prefix is over the limit; nothing of it was buffered."""


class AuthFailed(SockpoolError):
    """The other side could not prove it knows the shared secret.

    `reason` is for the log of the side that found out; the wire only ever
    says "authentication failed".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"authentication failed: {reason}")
        self.reason = reason


class ConnectionLost(SockpoolError):
    """The network or the peer went away."""


class HandshakeRefused(SockpoolError):
    """The broker refused us, or we refused the broker (version, role, auth, TLS).

    Retrying cannot help: the configuration on one side must change.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
