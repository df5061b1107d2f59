"""One request and its reply, for tools that ask a broker and leave.

`broker status` and `broker failed` are clients for a moment: they connect
with the client's credentials, send one request, read its reply and hang
up. They need none of the Client's machinery (sessions, batching,
reconnects), and the broker's own package must not import the client's.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from sockpool.protocol import ROLE_CLIENT, ConnectionLost, Error, Message, Ping, Pong, ProtocolError
from sockpool.protocol.values import from_wire_error, from_wire_kwargs, from_wire_value

from .connection import connect, new_hello
from .credentials import Credentials

R = TypeVar("R", bound=Message)


def ask(address: str | None, request: Message, reply_type: type[R], credentials: Credentials,
        timeout_s: float, *, role: str = ROLE_CLIENT, name: str = "sockpool-tool") -> R:
    """Send `request` on a fresh connection (as a client, or `role`) and
    return its reply.

    Raises:
        ConnectionLost: the broker cannot be reached, or did not answer in time.
        HandshakeRefused: the broker refused us.
        ProtocolError: the broker answered with something unexpected.
    """
    conn, _ = connect(address, new_hello(role, name=name), timeout_s, credentials)
    deadline = time.monotonic() + timeout_s
    try:
        conn.send(request)
        while True:
            msg = conn.recv(deadline)
            if isinstance(msg, reply_type):
                return msg
            if isinstance(msg, Ping):
                conn.send(Pong())
            elif isinstance(msg, Error):
                raise ProtocolError(f"the broker says {msg.code}: {msg.message}")
    except TimeoutError:
        raise ConnectionLost(f"no reply to {request.type} within {timeout_s} s") from None
    finally:
        conn.close()


def failed_job_rows(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """`failed_jobs` rows as dicts, their user values decoded (shown as
    stored where they cannot be)."""
    keys = ("task", "args", "kwargs", "error", "attempts", "finished_at", "id", "retryable")
    jobs = []
    for row in rows:
        job = dict(zip(keys, row))
        try:
            job.update(args=from_wire_value(row[1]), kwargs=from_wire_kwargs(row[2]), error=from_wire_error(row[3]))
        except ProtocolError:
            pass
        jobs.append(job)
    return jobs
