"""sockpool: a distributed work queue for Python that needs nothing but itself.

    from sockpool import AsyncClient, Client, Executor, JobFailed

    with Client("broker-host:7341") as client:
        print(client.submit("square", 7).result())

    async with AsyncClient("broker-host:7341") as client:
        print(await client.submit("square", 7))

The parts live in subpackages: `sockpool.protocol` (the wire format, no
I/O), `sockpool.net` (the socket layer every side shares),
`sockpool.broker`, `sockpool.worker` and `sockpool.client`.
"""

from sockpool.client import AsyncClient, BrokerFull, BrokerRefused, Client, Executor, JobFailed
from sockpool.protocol import ConnectionLost, HandshakeRefused, ProtocolError, SockpoolError

__all__ = ["AsyncClient", "BrokerFull", "BrokerRefused", "Client", "ConnectionLost", "Executor", "HandshakeRefused",
           "JobFailed", "ProtocolError", "SockpoolError"]
