"""What the state does for schedules and per-queue status; split from state.py. No I/O.

`fire_schedules` turns the firings `Schedules.due` reports into jobs,
journalling each job with its schedule's progress so they commit in one
transaction; `schedule_outcome` records a firing's result on its schedule;
`queue_status` is the per-queue part of `BrokerState.status`. Each is
called by `BrokerState` with the state lock held by the server.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from sockpool.protocol.messages import DEFAULT_QUEUE

from .records import Job
from .schedules import SESSION_PREFIX

if TYPE_CHECKING:
    from .state import BrokerState


def fire_schedules(state: BrokerState, now: float) -> None:
    """Enqueue each due firing once: the job and the schedule's new
    `since` are journalled together, so they commit together."""
    for firing in state.schedules.due(now):
        schedule = firing.schedule
        key = int(firing.fire_time)
        session = state.session(schedule.session)
        if firing.enqueue and not session.holds(key):
            job = Job(state.take_gid(), schedule.session, key, schedule.task, list(schedule.args),
                      dict(schedule.kwargs), False, dict(schedule.options))
            state.stats.on_submitted(job.task, job.calls)
            state.quota.add(job.session, job.cost)  # removed again when it finishes
            state.jobs[job.gid] = job
            session.live[key] = job.gid
            state.journal.append(("add", job))
            state.make_ready(job)
            state.totals["scheduled"] += 1
        elif not firing.enqueue:
            schedule.last_outcome = {"fire": firing.fire_time, "outcome": "skipped (missed)", "at": now}
        state.journal.append(("schedule", schedule.record()))


def schedule_outcome(state: BrokerState, job: Job, ok: bool, value: Any, now: float) -> None:
    """A schedule's job is done: note how on the schedule, keep no result."""
    session = state.sessions.get(job.session)
    if session is not None:
        session.live.pop(job.cid, None)
    state.journal.append(("forget", [job.gid]))
    schedule = state.schedules.by_name.get(job.session.removeprefix(SESSION_PREFIX))
    if schedule is None:
        return
    if ok:
        outcome = "ok"
    else:
        error = value if isinstance(value, dict) else {"message": str(value)}
        outcome = f"failed: {error.get('type', 'Error')}: {str(error.get('message', ''))[:200]}"
    schedule.last_outcome = {"fire": float(job.cid), "outcome": outcome, "at": now}
    state.journal.append(("schedule", schedule.record()))


def queue_status(state: BrokerState, now: float) -> dict[str, dict[str, Any]]:
    """Per queue, in calls: ready, running, delayed; the oldest ready
    job's wait, completed calls per second, and whether it is paused."""
    running: Counter[str] = Counter()
    for worker in state.workers.values():
        for job in worker.leased.values():
            running[job.queue] += job.calls
    delayed = state.due.calls_by_queue
    rates = state.stats.queue_rates(now)
    names = state.dispatcher.names() | set(running) | set(delayed) | set(state.stats.queue_done)
    names.add(DEFAULT_QUEUE)
    rows = {}
    for name in sorted(names):
        queue = state.dispatcher.queues.get(name)
        oldest = queue.oldest_queued_at() if queue is not None else None
        rows[name] = {
            "ready": queue.calls if queue is not None else 0,
            "running": running[name],
            "delayed": delayed.get(name, 0),
            "oldest_wait_s": 0.0 if oldest is None else max(0.0, now - oldest),
            "per_s": rates.get(name, 0.0),
            "completed": state.stats.queue_done.get(name, 0),
            "paused": name in state.dispatcher.paused,
        }
    return rows
