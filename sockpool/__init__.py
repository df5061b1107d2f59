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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sockpool.client import AsyncClient, BrokerFull, BrokerRefused, Client, Executor, JobFailed
    from sockpool.protocol import ConnectionLost, HandshakeRefused, ProtocolError, SockpoolError

# Each public name and the subpackage it comes from. They are imported on
# first use (PEP 562), not here: every broker, worker and pool process
# imports `sockpool` first, and none of them needs the client (with
# asyncio and concurrent.futures behind it) that eager imports would load
# into each of them at start-up.
_EXPORTS = {
    "AsyncClient": "sockpool.client", "BrokerFull": "sockpool.client", "BrokerRefused": "sockpool.client",
    "Client": "sockpool.client", "Executor": "sockpool.client", "JobFailed": "sockpool.client",
    "ConnectionLost": "sockpool.protocol", "HandshakeRefused": "sockpool.protocol",
    "ProtocolError": "sockpool.protocol", "SockpoolError": "sockpool.protocol",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sockpool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
