"""Handing ready jobs out to the workers with credit: how many each worker
gets (its fair share, by processes, of what it can run), leasing them to
it, and the `started` messages for the sessions that asked for them.
Which jobs, in what order, is the decision of `Dispatcher` (broker/dispatch.py).
"""

from __future__ import annotations

import math
from typing import Any, TYPE_CHECKING

from sockpool.protocol import Jobs, Started
from .records import Job, WorkerInfo

if TYPE_CHECKING:
    from .state import BrokerState, Outbox


def dispatch(state: BrokerState) -> Outbox:
    """Hand ready jobs to workers with credit, each its fair share; then
    successors to jobs holding a limit's slot (broker/succession.py)."""
    out = dispatch_ready(state)
    if state.succession.holders and state.limits.waiting:
        out += state.succession.hand_out(state)
    return out


def dispatch_ready(state: BrokerState) -> Outbox:
    """Hand ready jobs to workers with credit, each its fair share.

    The share is of the load, not of each arrival: a worker is given what
    brings the jobs it holds, per process, up to the level that the jobs
    held and waiting would reach spread over every worker that could run
    them, in proportion to their processes. So a worker that granted a
    large credit cannot take every queued job while another worker with
    free processes gets none (the prefetch hoarding users of other queues
    complain about), and a new batch goes whole to the workers holding
    least rather than in a sliver to every worker: with many workers,
    splitting each submit N ways cost N frames, each a wake-up and a
    syscall on the broker, the worker and the pool, for jobs whose results
    then came back in as many frames. Which jobs: broker/dispatch.py.
    """
    dispatcher = state.dispatcher
    if not dispatcher.count:
        return []
    eligible = [w for w in state.workers.values() if w.credit > 0]
    if not eligible:
        return []
    eligible.sort(key=lambda w: len(w.leased) / w.processes)
    out: Outbox = []
    started: list[Job] = []
    for index, worker in enumerate(eligible):
        waiting = dispatcher.waiting_for(worker.queues, worker.tasks)
        if not waiting:
            continue
        # Share what this worker can run with the workers still to be
        # served that could run some of it too; they hold no less than it
        # does (the list is sorted by load), so its share is never negative.
        processes, held = worker.processes, len(worker.leased)
        if index + 1 < len(eligible):
            runnable = dispatcher.runnable_tasks(worker.queues, worker.tasks)
            for w in eligible[index + 1:]:
                if not w.tasks.isdisjoint(runnable) and any(q in w.queues for q in worker.queues):
                    processes += w.processes
                    held += len(w.leased)
        share = math.ceil((waiting + held) * worker.processes / processes) - len(worker.leased)
        holders: list[int] = []
        batch = take(state, worker, min(worker.credit, share), started, holders) if share > 0 else []
        if batch:
            out.append((worker.conn_id, Jobs(batch, holders) if holders else Jobs(batch)))
        if not dispatcher.count:
            break
    return out + started_messages(state, started) if started else out


def started_messages(state: BrokerState, jobs: list[Job]) -> Outbox:
    """One `started` per session for the jobs that just went to workers."""
    by_session: dict[str, list[int]] = {}
    for job in jobs:
        by_session.setdefault(job.session, []).append(job.cid)
    out: Outbox = []
    for session_id, cids in by_session.items():
        session = state.sessions.get(session_id)
        if session is not None and session.conn_id is not None:
            out.append((session.conn_id, Started(cids)))
    return out


def take(
    state: BrokerState, worker: WorkerInfo, limit: int, started: list[Job], holders: list[int]
) -> list[list[Any]]:
    """Lease up to `limit` ready jobs to `worker`; `holders` gets those
    holding a limit's slot that may name a successor there."""
    jobs = state.dispatcher.take(worker.queues, worker.tasks, limit, state.now)
    batch: list[list[Any]] = []
    leased = worker.leased
    now = state.now
    successors = worker.successors and state.limits.any  # else no job here holds a slot
    for job in jobs:
        job.worker = worker.conn_id
        job.dispatched_at = now
        leased[job.gid] = job
        batch.append(job.entry())
        if job.notify:
            started.append(job)
        if successors and job.limits:
            state.succession.note(job)
            holders.append(job.gid)
    worker.credit -= len(batch)
    return batch
