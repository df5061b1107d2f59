"""The opening exchange: what a hello must hold before a broker accepts it.

    peer -> broker   hello {version, role, ...}
    broker -> peer   welcome {...}   or   error {code, message} and close
"""

from __future__ import annotations

from .messages import E_ROLE, E_VERSION, PROTOCOL_VERSION, ROLE_WORKER, ROLES, Error, Hello


def check_hello(hello: Hello) -> Error | None:
    """The refusal to send for this hello, or None if it is acceptable."""
    if hello.version != PROTOCOL_VERSION:
        return Error(
            E_VERSION,
            f"broker speaks protocol version {PROTOCOL_VERSION}, peer sent {hello.version}",
        )
    if hello.role not in ROLES:
        return Error(E_ROLE, f"unknown role {hello.role!r}; expected one of {', '.join(ROLES)}")
    if hello.role == ROLE_WORKER and hello.processes < 1:
        return Error(E_ROLE, "a worker must declare at least one process")
    return None
