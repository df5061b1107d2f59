"""What is unsafe about where and how a broker listens (`broker start`
prints these in red; an embedding program should show them too)."""

from __future__ import annotations

import ipaddress

from sockpool.net.connection import join_address
from sockpool.protocol import ROLE_CLIENT, ROLE_WORKER


def exposure_warnings(host: str, port: int, open_roles: list[str], tls: bool) -> list[str]:
    """Warnings for a broker bound to `host`, with no secret for `open_roles`.

    Loopback is the machine's own business; any other address is reachable
    by strangers, who must then not be able to submit jobs or, worse, join
    as a worker and receive other people's jobs.
    """
    try:
        if ipaddress.ip_address(host).is_loopback:
            return []
    except ValueError:
        pass  # a name, not an address: assume it is reachable
    where = join_address(host, port)
    warnings = []
    if open_roles:
        dangers = []
        if ROLE_CLIENT in open_roles:
            dangers.append("submit jobs that run on the workers")
        if ROLE_WORKER in open_roles:
            dangers.append("join as a worker and receive other people's jobs")
        warnings.append(
            f"listening on {where}, reachable from other machines, with no secret: anyone who can "
            f"reach this port can {' and '.join(dangers)}. Start the broker with --secret-file "
            "(see SECURITY.md)."
        )
    if not tls:
        warnings.append(
            f"listening on {where} without TLS: jobs and results cross the network in the clear. "
            "On a network you do not trust, add --tls-cert and --tls-key."
        )
    return warnings
