"""The sockpool client: `Client("host:port")` with `submit` and `map`,
`Executor("host:port")`, a `concurrent.futures.Executor` over the cluster,
and `AsyncClient("host:port")` for asyncio code."""

from sockpool.protocol import ConnectionLost, HandshakeRefused, ProtocolError, SockpoolError

from .aio import AsyncClient
from .api import Client
from .errors import BrokerFull, BrokerRefused, JobFailed
from .executor import Executor

__all__ = ["AsyncClient", "BrokerFull", "BrokerRefused", "Client", "ConnectionLost", "Executor", "HandshakeRefused",
           "JobFailed", "ProtocolError", "SockpoolError"]
