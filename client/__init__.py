"""The sockpool client: `Client("host:port")` with `submit` and `map`."""

from protocol import ConnectionLost, HandshakeRefused, ProtocolError, SockpoolError

from .api import Client, JobFailed

__all__ = ["Client", "ConnectionLost", "HandshakeRefused", "JobFailed", "ProtocolError", "SockpoolError"]
