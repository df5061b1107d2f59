"""Leadership on PostgreSQL: a lease row with an epoch.

One row, `sockpool_leader`, says which broker is active, in which epoch,
and until when its lease runs (`expires_at`, in the database's clock, so
the brokers' clocks never have to agree). A standby takes over only when
the lease has expired, and taking over increments the epoch in the same
statement, so two brokers can never both win.

Why an old leader stays silent (fencing), in two layers:
1. Every commit of the store reads the epoch under a row lock (FOR SHARE)
   in the same transaction as its writes; a takeover's UPDATE waits for
   that lock, so a commit either lands before the new leader restores (and
   the new leader sees it) or fails because the epoch moved on.
2. Nothing leaves the broker unless `valid()`: the broker's own monotonic
   clock says the last successful renewal started less than LEASE_VALID_S
   ago. The database grants LEASE_TTL_S from that renewal, which is later,
   so an old leader's validity ends LEASE_TTL_S - LEASE_VALID_S before any
   standby may take over; a broker frozen by SIGSTOP or a GC pause finds
   its validity gone the moment it runs again. The first time `valid()`
   says no, leadership is lost for good: a message that was not sent
   leaves the state out of step with its peers, so the broker starts over.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg

from sockpool.protocol.defaults import LEASE_POLL_S, LEASE_RENEW_S, LEASE_TTL_S, LEASE_VALID_S

from .leadership import Leadership, LeaseTerm

log = logging.getLogger("sockpool.broker.lease")

# Lease statements must never hang past the lease: a renewal that cannot
# finish in time is as good as failed.
# The lock wait ends first, so a takeover that waits on a lock says so.
_LEASE_OPTIONS = f"-c statement_timeout={int(LEASE_RENEW_S * 2000)} -c lock_timeout={int(LEASE_RENEW_S * 1000)}"

# The sessions of an expired leader's writers, which may hold the lease row's
# share lock for ever: a broker frozen inside a pipelined transaction is not
# "idle in transaction" to the server, so no server timeout ends it.
_TERMINATE_EXPIRED_WRITERS = """
SELECT pg_terminate_backend(l.pid) FROM pg_locks l, sockpool_leader s
WHERE l.relation = 'sockpool_leader'::regclass AND l.mode = 'RowShareLock' AND l.granted
  AND l.pid <> pg_backend_pid() AND s.id = 1 AND s.expires_at < clock_timestamp()
"""


def connect(url: str, options: str = "", *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection that notices a dead peer within seconds, not hours."""
    return psycopg.connect(
        url, autocommit=autocommit, connect_timeout=2, options=options,
        keepalives=1, keepalives_idle=2, keepalives_interval=1, keepalives_count=2,
        tcp_user_timeout=int(LEASE_TTL_S * 1000),
    )


class PostgresLease(Leadership):
    def __init__(self, url: str) -> None:
        self.url = url
        self.name = "?"
        self.address = "?"
        self.epoch = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._term: LeaseTerm | None = None  # the current or last term; guarded by _lock
        self._lost = threading.Event()
        self._leader: str | None = None
        self._last_error_log = -1e9

    def identify(self, name: str, address: str) -> None:
        self.name, self.address = name, address

    # -- the interface -----------------------------------------------------------

    def acquire(self, stop: threading.Event, wait: bool = True) -> bool:
        while True:
            if self._try_take_over():
                return True
            if not wait or stop.wait(LEASE_POLL_S):
                return False

    def valid(self) -> bool:
        with self._lock:
            term = self._term
            if term is None:
                return False
            was_lost = term.lost is not None
            if term.valid(time.monotonic()):
                return True
        if not was_lost:
            self._ended()
        return False

    def wait_lost(self, stop: threading.Event) -> str | None:
        while not stop.is_set():
            if self._lost.wait(0.1):
                with self._lock:
                    return self._term.lost if self._term is not None else "no term"
        return None

    def lose(self, reason: str) -> None:
        with self._lock:
            ended = self._term is not None and self._term.lose(reason)
        if ended:
            self._ended()

    def _ended(self) -> None:
        self._leader = None  # not us any more; the next poll says who
        self._lost.set()

    def leader(self) -> str | None:
        return self._leader

    def release(self) -> None:
        """Expire our lease now, so a standby need not wait for it."""
        with self._lock:
            was_leading = self._term is not None and self._term.lose("released")
        if not was_leading:
            self._close()
            return
        try:
            self._connection().execute(
                "UPDATE sockpool_leader SET expires_at = '-infinity' WHERE id = 1 AND epoch = %s", (self.epoch,)
            )
        except psycopg.Error as exc:
            log.warning("could not release the lease (a standby takes over when it expires): %s", exc)
        self._close()

    # -- the lease -----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, _LEASE_OPTIONS)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _try_take_over(self) -> bool:
        started = time.monotonic()
        try:
            conn = self._connection()
            row = conn.execute(
                "UPDATE sockpool_leader SET epoch = epoch + 1, holder = %s, address = %s,"
                " expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE id = 1 AND expires_at < clock_timestamp() RETURNING epoch",
                (self.name, self.address, LEASE_TTL_S),
            ).fetchone()
            if row is None:
                current = conn.execute("SELECT holder, address, epoch FROM sockpool_leader WHERE id = 1").fetchone()
                if current is not None:
                    self._leader = current[1]
                return False
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            # The lease row is locked: by a live leader's commit (a moment),
            # or by a frozen one's, whose lease has run out: end that one.
            try:
                ended = self._connection().execute(_TERMINATE_EXPIRED_WRITERS).fetchall()
                if ended:
                    log.warning("standby: ended %d session(s) of the expired leader holding the lease row", len(ended))
            except psycopg.Error as exc:
                self._close()
                log.warning("standby: cannot end the expired leader's sessions: %s", str(exc).strip())
            return False
        except psycopg.Error as exc:
            self._close()
            if started - self._last_error_log > 10:
                log.warning("standby: cannot reach PostgreSQL: %s", str(exc).strip())
                self._last_error_log = started
            return False
        with self._lock:
            self.epoch = row[0]
            self._term = LeaseTerm(self.epoch, started, LEASE_VALID_S)
            self._lost.clear()
        self._leader = self.address
        threading.Thread(target=self._renew_loop, args=(self.epoch,), name="lease", daemon=True).start()
        return True

    def _renew_loop(self, epoch: int) -> None:
        while not self._lost.wait(LEASE_RENEW_S) and self.epoch == epoch:
            started = time.monotonic()
            try:
                cur = self._connection().execute(
                    "UPDATE sockpool_leader SET expires_at = clock_timestamp() + make_interval(secs => %s)"
                    " WHERE id = 1 AND epoch = %s",
                    (LEASE_TTL_S, epoch),
                )
                if cur.rowcount != 1:
                    if self.epoch != epoch:
                        return  # a later term of ours: not this loop's business
                    holder = self._connection().execute(
                        "SELECT holder, epoch FROM sockpool_leader WHERE id = 1"
                    ).fetchone()
                    self.lose(f"fenced: broker {holder[0] if holder else '?'} took over "
                              f"(epoch {holder[1] if holder else '?'}, ours was {epoch})")
                    return
                with self._lock:
                    if self._term is not None and self._term.epoch == epoch:
                        self._term.renewed(started)
            except psycopg.Error as exc:
                self._close()
                log.warning("lease renewal failed: %s", str(exc).strip())
            self.valid()  # loses leadership once the lease ran out
