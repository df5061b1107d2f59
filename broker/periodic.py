"""Periodic work, driven by `now` from the server's ticker: delayed jobs
and retries whose time has come go to the queue, and jobs a limit let
through; schedules fire; heartbeats go out, and the connections that
missed too many are named for the server to close; expired results and
failures are swept, sessions gone past their grace abandoned, and jobs
of a task nobody served in time failed. `BrokerState.tick` and
`take_silent_connections` delegate here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sockpool.protocol import Ping
from sockpool.protocol.defaults import HEARTBEAT_MISSES

from .firing import fire_schedules

if TYPE_CHECKING:
    from .state import BrokerState, Outbox

# Results and failed jobs past their TTL are swept this often.
SWEEP_EVERY_S = 60.0


def tick(state: BrokerState, now: float) -> Outbox:
    """Periodic work: due retries, heartbeats, expiry."""
    state.now = now
    out: Outbox = []
    for job in state.due.pop_due(now):
        state._queue(job)
    for job in state.limits.tick(now):
        state._ready(job)
    state.stats.sample_queues(now)
    next_fire = state.schedules.next_due()
    if next_fire is not None and next_fire <= now:
        fire_schedules(state, now)
    if now >= state._next_ping:
        state._next_ping = now + state.heartbeat_s
        out += [(conn_id, Ping()) for conn_id in state.last_seen]
    if now >= state._next_sweep:
        state._next_sweep = now + SWEEP_EVERY_S
        state._sweep(now)
    if now >= state._next_abandon_check:
        state._next_abandon_check = now + min(SWEEP_EVERY_S, state.session_grace_s / 4)
        state._abandon_gone_sessions(now)
    if state.unserved.since:
        for task, since in state.unserved.due(now, bool(state.workers)):
            out += state._fail_unserved(task, now - since, now)
    return out + state._dispatch()


def take_silent_connections(state: BrokerState, now: float) -> list[int]:
    """Connections that missed HEARTBEAT_MISSES heartbeats, for the server
    to close (each is reported once; its disconnect follows)."""
    limit = now - state.heartbeat_s * HEARTBEAT_MISSES
    silent = [conn_id for conn_id, seen in state.last_seen.items() if seen < limit]
    for conn_id in silent:
        del state.last_seen[conn_id]
    return silent
