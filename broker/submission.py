"""Submitting: a batch of jobs from a session, each accepted into the
journal and the queue (or its due time, or a limit's line), followed to
the job already holding its unique key, or refused alone with a result
saying why (unfit to travel or be stored, the store not writing, the
session's or the broker's quota full). Then one `accepted` for the batch,
and a word for the jobs of a task nobody serves. `BrokerState.on_submit`
delegates here, once per submit frame; the loop over its jobs stays here
whole.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from sockpool.protocol import Accepted, Error, Notice, Results, Submit, error_value
from sockpool.protocol.messages import N_UNSERVED

from . import admission, control
from .quota import E_BROKER_FULL, JOB_OVERHEAD_BYTES
from .records import Job, Session
from .unserved import waiting_notice

if TYPE_CHECKING:
    from .state import BrokerState, Outbox


def on_submit(state: BrokerState, session: Session, msg: Submit, frame_bytes: int = 0) -> Outbox:
    """Accept a batch of jobs, or refuse some with results saying why.

    A job the session already has (sent again after a reconnect) is not
    added twice; its `accepted` still waits for the store, like every
    `accepted`, so it only goes out once the job is on disk.
    """
    refused: list[list[Any]] = []
    follow_out: Outbox = []
    added = 0
    unserved: set[str] = set()
    refusal = state.store_refusal
    # Jobs that could not travel on to a worker, or be stored, are
    # refused here, each alone, before anything else sees them.
    unfit = admission.unfit_jobs(msg.jobs, frame_bytes, state.max_frame_bytes)
    ready: list[Job] = []
    submitted: dict[str, int] = {}  # calls per task
    now = state.now
    # Each job's share of the frame it came in, plus what any job costs.
    cost = frame_bytes // max(1, len(msg.jobs)) + JOB_OVERHEAD_BYTES
    room = state.quota.room(session.session_id, cost)
    # Read once per frame, not once per job.
    live, kept, jobs, journal, served = session.live, session.results, state.jobs, state.journal, state.served
    session_id, notify = session.session_id, session.wants_started
    limited_tasks = state.limits.tasks  # empty: no job without options is limited
    for entry in msg.jobs:
        cid, task = entry[0], entry[1]
        if cid in live or cid in kept:  # session.holds(cid)
            continue  # sent again after a reconnect: we have it already
        why = unfit.get(cid) if unfit else None
        if why is None and refusal is not None:
            why = refusal
        if why is None and added >= room:
            why = state.quota.refusal(session.session_id, cost, added) or broker_full()
        if why is not None:
            refused.append([cid, False, why])
            state.stats.on_refused(task, why, state.now, session.session_id)
            continue
        key = entry[5].get("key") if len(entry) > 5 else None
        if key is not None and state.keys.holder(key) is not None:
            follow_out += control.follow(state, session, cid, key)
            continue
        if task not in served:
            unserved.add(task)
        options = entry[5] if len(entry) > 5 else None
        if options and "delay" in options:
            options = due_options(options, state.now)
        gid = state._next_gid
        if options:
            job = Job(gid, session_id, cid, task, entry[2], entry[3], entry[4], options)
        else:
            job = Job.plain(gid, session_id, cid, task, entry[2], entry[3], entry[4])
        job.notify = notify
        state._next_gid = gid + 1
        job.cost = cost
        submitted[task] = submitted.get(task, 0) + job.calls
        jobs[gid] = job
        live[cid] = gid
        journal.append(("add", job))
        if key is not None:
            state.keys.hold(key, job.gid, session.session_id, cid)
        at = job.at if options else None
        if at is not None and at > now:
            state.due.push(job, at)
        elif options or (limited_tasks and task in limited_tasks):
            # Limits may hold it back: they decide, after the plain jobs
            # before it, so one session's jobs keep their order.
            state.dispatcher.add_many(ready, now)
            ready = []
            state._queue(job)
        else:
            job.queued_at = now
            if task not in served:
                state.unserved.mark(task, now)
            ready.append(job)
        added += 1
    state.dispatcher.add_many(ready, now)
    for task, calls in submitted.items():  # counted once per task, not per job
        state.stats.on_submitted(task, calls)
    state.quota.add(session.session_id, cost, added)
    state.totals["submitted"] += added
    state.totals["refused"] += len(refused)
    conn_id = session.conn_id
    assert conn_id is not None  # on_message just set it
    # Refusals first: a client that sees `accepted` knows every fate.
    out: Outbox = [(conn_id, Results(refused))] if refused else []
    if refusal is not None and refused:
        out.append((conn_id, Error(refusal["type"], refusal["message"])))
    out += follow_out
    out.append((conn_id, Accepted(msg.batch, len(msg.jobs) - len(refused))))
    for task in sorted(unserved):  # never without a word: say what they wait for
        if task in state.unserved.since:
            wait_s = state.unserved.deadline(task, bool(state.workers)) - state.now
            out.append((conn_id, Notice(N_UNSERVED, waiting_notice(task, state.served, wait_s))))
    return out + state._dispatch()


def due_options(options: dict[str, Any], now: float) -> dict[str, Any]:
    """A job's options with its `delay` turned into an absolute `at`, so that
    its due time is stored and survives a restart; the later of the two wins."""
    options = dict(options)
    at = now + options.pop("delay")
    options["at"] = max(at, options.get("at", at))
    return options


def broker_full() -> dict[str, Any]:
    return error_value(E_BROKER_FULL, "broker full: submit again once jobs have finished")
