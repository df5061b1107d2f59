"""The error classes shared by every side; each one says who is at fault."""


class SockpoolError(Exception):
    """Base class of every error sockpool raises on purpose."""


class ProtocolError(SockpoolError):
    """The peer sent bytes or messages we cannot accept; close the connection."""


class ConnectionLost(SockpoolError):
    """The network or the peer went away."""


class HandshakeRefused(SockpoolError):
    """The broker answered our hello with an error (version, role, auth)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
