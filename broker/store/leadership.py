"""Who may serve: the leadership a broker holds next to its store.

A broker serves only while its store's `Leadership` says so. The server asks
three things of it: `acquire()` (block until this broker is the active one),
`valid()` (may I still send anything? asked before every message leaves),
and `wait_lost()` (block until leadership is gone, and say why). The broker
state never sees any of this.

`SoleLeadership` is SQLite's: the data directory's lock already keeps every
other broker out, so it is held from the start and never lost. The
PostgreSQL lease (postgres.py) can be lost, and is fenced by epoch.
"""

from __future__ import annotations

import threading


class Fenced(Exception):
    """This broker is no longer the active one; what it writes must not commit."""


class Leadership:
    """The interface; see the module docstring."""

    epoch = 0

    def identify(self, name: str, address: str) -> None:
        """Who we are, for the others' logs and the standby's redirect message."""

    def acquire(self, stop: threading.Event, wait: bool = True) -> bool:
        """Block until this broker leads (True) or `stop` is set (False);
        with `wait=False`, try once."""
        raise NotImplementedError

    def valid(self) -> bool:
        raise NotImplementedError

    def wait_lost(self, stop: threading.Event) -> str | None:
        """Block until leadership is lost (its reason) or `stop` is set (None)."""
        raise NotImplementedError

    def lose(self, reason: str) -> None:
        """Give up leading at once (a failed commit means we cannot go on)."""

    def leader(self) -> str | None:
        """Where the active broker is, as last seen; None if unknown."""
        return None

    def release(self) -> None:
        """Step down so a standby can take over at once (a clean stop)."""


class SoleLeadership(Leadership):
    """Always held: only one broker can open the store."""

    def acquire(self, stop: threading.Event, wait: bool = True) -> bool:
        return True

    def valid(self) -> bool:
        return True

    def wait_lost(self, stop: threading.Event) -> str | None:
        stop.wait()
        return None


class LeaseTerm:
    """One term of a lease-based leadership, in the broker's own monotonic
    clock: the rule that decides whether anything may leave the broker.

    Pure: every method takes `now`. The term is valid until `valid_s` after
    the *start* of the last successful renewal (the database grants more,
    from a later moment, so this end comes first). Once it has said no, or
    was lost, it stays lost: what was not sent then leaves the state out of
    step with the peers, so the broker must start over.
    """

    def __init__(self, epoch: int, started: float, valid_s: float) -> None:
        self.epoch = epoch
        self.valid_s = valid_s
        self.valid_until = started + valid_s
        self.lost: str | None = None

    def renewed(self, started: float) -> None:
        """A renewal that began at `started` succeeded (never shortens the term)."""
        if self.lost is None:
            self.valid_until = max(self.valid_until, started + self.valid_s)

    def valid(self, now: float) -> bool:
        if self.lost is None and now >= self.valid_until:
            self.lost = f"lease expired: no renewal for {self.valid_s:g} s (paused, or the database unreachable)"
        return self.lost is None

    def lose(self, reason: str) -> bool:
        """End the term; whether this call ended it (not an earlier one)."""
        if self.lost is not None:
            return False
        self.lost = reason
        return True
