"""Admitting and forgetting connections: the handshake of a worker or a
client (its session attached, created if new, and what it is owed resent:
the welcome, its jobs running now, its results not acknowledged), and a
disconnect (a worker's leases requeued, the sessions waiting for a task
nobody serves now told; a client's session detached, kept for its grace).
`BrokerState.on_hello` and `on_disconnect` delegate here.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import TYPE_CHECKING

from sockpool.protocol import ROLE_OPERATOR, ROLE_WORKER, Error, Hello, Notice, Results, Started, Welcome, check_hello
from sockpool.protocol.messages import DEFAULT_QUEUE, E_HANDSHAKE, N_UNSERVED, PROTOCOL_VERSION

from .records import Session, WorkerInfo
from .schedules import SESSION_PREFIX
from .unserved import waiting_notice

if TYPE_CHECKING:
    from .state import BrokerState, Outbox


def on_hello(state: BrokerState, conn_id: int, hello: Hello, address: str, now: float) -> Outbox:
    """Admit a new connection. The first reply is a welcome, or an error
    after which the server closes the connection."""
    state.now = now
    refusal = check_hello(hello)
    if refusal is None and hello.role != ROLE_WORKER and hello.session.startswith(SESSION_PREFIX):
        refusal = Error(E_HANDSHAKE, f"sessions starting with {SESSION_PREFIX!r} belong to schedules")
    if refusal is not None:
        return [(conn_id, refusal)]
    state.last_seen[conn_id] = now
    session: Session | None = None
    if hello.role == ROLE_WORKER:
        state.workers[conn_id] = WorkerInfo(
            conn_id, hello.name, address, frozenset(hello.tasks), hello.processes, now,
            queues=tuple(dict.fromkeys(hello.queues)) or (DEFAULT_QUEUE,), last_seen=now,
            successors=hello.successors,
        )
        state.served.update(set(hello.tasks))
        state.unserved.joined(hello.tasks, now)
    else:
        # A session ID is a bearer capability: whoever names it gets its
        # results. So a broker-chosen one is 128 bits from the OS's
        # CSPRNG, never from `state.rng` (a Mersenne Twister, whose next
        # output 624 observed ones predict).
        session = state._session(hello.session or new_session_id())
        session.conn_id = conn_id
        session.gone_since = None
        session.abandoned = False
        state.clients[conn_id] = session
        if hello.started and not session.wants_started:
            session.wants_started = True
            for gid in session.live.values():
                state.jobs[gid].notify = True
        if hello.role == ROLE_OPERATOR:
            state.operators.add(conn_id)
    welcome = Welcome(
        version=PROTOCOL_VERSION,
        broker=state.name,
        max_frame_bytes=state.max_frame_bytes,
        session=session.session_id if session else "",
        processes=state.total_processes,
        heartbeat_s=state.heartbeat_s,
        jobs=len(session.live) + len(session.results) if session else 0,
    )
    out: Outbox = [(conn_id, welcome)]
    if session is not None and session.wants_started:
        running = [cid for cid, gid in session.live.items() if state.jobs[gid].worker is not None]
        if running:
            out.append((conn_id, Started(running)))
    if session is not None and session.results:
        # Everything not acknowledged: the client drops what it already has.
        out.append((conn_id, Results([r.entry for r in session.results.values()])))
    return out


def on_disconnect(state: BrokerState, conn_id: int, now: float) -> Outbox:
    """Forget a connection. A worker's jobs go back to the front of the
    queue; those it was running count as an attempt."""
    state.now = now
    state.last_seen.pop(conn_id, None)
    worker = state.workers.pop(conn_id, None)
    if worker is not None:
        state.served.subtract(set(worker.tasks))
        state.served += Counter()  # drop zero counts
        out: Outbox = []
        for task in worker.tasks:
            if task not in state.served and task in state.dispatcher.by_task and state.unserved.mark(task, now):
                out += tell_waiting(state, task)  # its last server left
        if worker.draining:
            # Asked to stop, it left what it could not finish in time:
            # that is no fault of the jobs', so they go back uncharged,
            # as if released.
            return out + state.on_release(worker, list(worker.leased))
        for job in reversed(list(worker.leased.values())):
            out += state._lost(job, job.gid in worker.running, now)
        return out + state._dispatch()
    state.operators.discard(conn_id)
    session = state.clients.pop(conn_id, None)
    if session is not None and session.conn_id == conn_id:
        others = [c for c, s in state.clients.items() if s is session]
        session.conn_id = others[-1] if others else None
        session.gone_since = None if others else now
    return []


def tell_waiting(state: BrokerState, task: str) -> Outbox:
    """Tell the connected sessions with jobs of `task` queued that they
    now wait for a worker that serves it."""
    wait_s = state.unserved.deadline(task, bool(state.workers)) - state.now
    notice = Notice(N_UNSERVED, waiting_notice(task, state.served, wait_s))
    sessions = state.dispatcher.sessions_with_task(task)
    conns = {state.sessions[s].conn_id for s in sessions if s in state.sessions}
    return [(conn_id, notice) for conn_id in sorted(c for c in conns if c is not None)]


def new_session_id() -> str:
    """An unguessable session ID: 128 bits from `secrets`."""
    return secrets.token_hex(16)
