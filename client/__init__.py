"""The sockpool client: `Client("host:port")` with `submit` and `map`, and
`Executor("host:port")`, a `concurrent.futures.Executor` over the cluster."""

from sockpool.protocol import ConnectionLost, HandshakeRefused, ProtocolError, SockpoolError

from .api import Client
from .errors import BrokerRefused, JobFailed
from .executor import Executor

__all__ = ["BrokerRefused", "Client", "ConnectionLost", "Executor", "HandshakeRefused", "JobFailed", "ProtocolError", "SockpoolError"]
