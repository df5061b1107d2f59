"""The broker's terms of leadership, and the restore that opens each.

Active or standby: the broker serves only while its store's leadership
(broker/store/leadership.py) says so. A standby refuses every hello with a
`standby` error naming the active broker, and waits to lead. When it leads,
it restores the state from the store exactly as at a restart. When it loses
the lead (fenced, or its store failing), it drops every connection and
its state, says why, and stands by again. Each term of leadership is a
generation; a connection admitted in an earlier one is closed, never heard.

A broker that can lead at once (its own SQLite store, or a free lease)
starts its first term while it starts up, and its restore thread streams
the rest in (`_restore_at_start`); later terms restore on the leadership
thread. Both take the same path.

`LeadershipTerms` is a part of `BrokerServer` (server.py), kept apart
because it is an idea of its own; it uses the server's lock, state, peers
and store, which the server sets up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Iterator

from sockpool.protocol import Error
from sockpool.protocol.messages import E_STANDBY

from .collector import no_cyclic_gc
from .state import BrokerState
from .store import GroupCommitStore, Snapshot

if TYPE_CHECKING:
    from .peer import Peer

log = logging.getLogger("sockpool.broker")


class LeadershipTerms:
    # Set up by BrokerServer.__init__, which also has the _new_state,
    # _emit, _on_store_health and stop that these methods call.
    name: str
    store: GroupCommitStore | None
    state: BrokerState
    active: bool
    restored: threading.Event
    _lock: threading.Lock
    _generation: int
    _peers: dict[int, Peer]
    _stopping: threading.Event
    _restore_parts: Iterator[Snapshot] | None

    def _activate(self) -> None:
        """Lead: restore the state from the store, as a restart does, and serve.

        Raises:
            Exception: whatever the store raises reading back.
        """
        assert self.store is not None
        parts = iter(self.store.restore_in_parts())
        state = self._new_state()
        # Results and failed jobs first: the unfinished jobs stream in while
        # we serve (_restore_rest), so workers get the first ones at once.
        with no_cyclic_gc():
            first = next(parts, None)
            if first is not None:
                state.restore(first.jobs, first.results, first.failed, time.time(), first.followers)
                state.restore_settings(first.paused, first.schedules)
        with self._lock:
            self.restored.clear()
            self.state = state
            self._generation += 1
            self.active = True
        self._restore_parts = parts

    def _deactivate(self, reason: str) -> None:
        """Stop serving: drop every connection, the state and the unwritten journal."""
        assert self.store is not None
        log.error("stopped serving: %s", reason)
        with self._lock:
            self.active = False
            self._generation += 1
            self.state = self._new_state()
            peers = list(self._peers.values())
        for peer in peers:
            peer.close()
        self.store.abandon()
        log.warning("standing by: waiting to lead again")

    def _lead_loop(self) -> None:
        """Win leadership, serve, lose it, stand by; until `stop()`."""
        assert self.store is not None
        lead = self.store.leadership
        while not self._stopping.is_set():
            if not self.active:
                if not lead.acquire(self._stopping):
                    return
                try:
                    self._activate()
                    self._restore_rest()
                except Exception as exc:  # the store failed reading back: try again later
                    log.error("could not restore from the store: %s", exc)
                    lead.lose(f"restore failed: {exc}")
            reason = lead.wait_lost(self._stopping)
            if reason is None or self._stopping.is_set():
                return
            self._deactivate(reason)

    def _leading(self) -> bool:
        """May anything leave this broker now? Asked before every message."""
        return self.store is None or (self.active and self.store.leadership.valid())

    def _standby_refusal(self) -> Error:
        leader = self.store.leadership.leader() if self.store is not None else None
        where = f"the active broker is at {leader}" if leader else "no broker is active yet"
        return Error(E_STANDBY, f"broker {self.name} is a standby; {where}")

    def _restore_at_start(self) -> None:
        try:
            self._restore_rest()
        except Exception:  # top of a thread: without the rest of the store we must not serve clients
            log.exception("restoring the store failed; stopping")
            self.stop()

    def _restore_rest(self) -> None:
        """Queue the stored unfinished jobs, a batch at a time, while we
        serve: workers get the first ones at once. Exactly-once needs every
        stored job known before any client submits (a resent job must be
        recognised), so clients are admitted only when this is done. The
        store's writer starts after the last read; what is journalled
        meanwhile (results of restored jobs) waits in its queue.

        Raises:
            Exception: whatever the store raises reading back.
        """
        assert self._restore_parts is not None and self.store is not None
        parts, self._restore_parts = self._restore_parts, None
        started = time.monotonic()
        jobs = 0
        with no_cyclic_gc():
            for part in parts:
                with self._lock:
                    self.state.restore(part.jobs, part.results, part.failed, time.time(), part.followers)
                    self._emit(self.state.tick(time.time()))  # hand the new jobs to waiting workers
                jobs += len(part.jobs)
        with self._lock:
            jobs = len(self.state.jobs)
            results = sum(len(session.results) for session in self.state.sessions.values())
        self.store.start(on_health=self._on_store_health)
        self.restored.set()
        epoch = self.store.leadership.epoch
        if epoch or jobs or results:
            log.info(
                "active%s: recovered %d unfinished jobs and %d undelivered results in %.2f s",
                f" (epoch {epoch})" if epoch else "", jobs, results, time.monotonic() - started,
            )
