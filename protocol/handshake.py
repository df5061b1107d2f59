"""The opening exchange: what a hello must hold before a broker accepts it.

    peer -> broker   hello {version, role, ...}
    broker -> peer   welcome {...}   or   error {code, message} and close

With a secret, a challenge and an auth come between hello and welcome; see
protocol/auth.py. With TLS, all of this runs inside the TLS session.
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


# A TLS record starts with its content type (22 handshake, 21 alert) and the
# major version 3. A sockpool stream starts with a 4-byte length whose top
# byte is 0 for any frame under 16 MiB, and handshake frames are far smaller
# than that, so at the start of a connection the two never look alike.
_TLS_RECORD_TYPES = (0x15, 0x16)


def looks_like_tls(head: bytes) -> bool:
    """True if a stream starting with `head` is TLS. One byte decides; a
    second, where there is one, must be the version's major number."""
    if not head or head[0] not in _TLS_RECORD_TYPES:
        return False
    return len(head) < 2 or head[1] == 0x03
