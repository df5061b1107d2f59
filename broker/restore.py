"""Rebuilding `BrokerState` from what the store kept, after a restart or a
failover: unfinished jobs queued again, results waiting for their
sessions, failed jobs listable, unique keys and their followers held
again, paused queues and schedules as they were.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, TYPE_CHECKING

from . import admission
from .quota import JOB_OVERHEAD_BYTES
from .records import FailedJob, Job, StoredResult
from .schedules import Schedule

if TYPE_CHECKING:
    from .state import BrokerState

_BY_GID = attrgetter("gid")


def restore(
    state: BrokerState, jobs: list[Job], results: list[tuple[str, StoredResult]], failed: list[FailedJob], now: float,
    followers: list[tuple[str, int, int]] | None = None,
) -> None:
    """Rebuild from the store after a restart: unfinished jobs are queued
    again (those that were running included), results wait for their
    sessions, failed jobs stay listable; unique keys are held again by
    the jobs that held them, and their followers follow again."""
    state.now = now
    jobs = sorted(jobs, key=_BY_GID)
    _restore_jobs(state, jobs, now)
    for session_id, cid, gid in followers or ():
        followed = state.jobs.get(gid)
        if followed is not None:
            followed.followers = (followed.followers or []) + [(session_id, cid)]
            state._session(session_id).live[cid] = gid
    for session_id, result in results:
        session = state._session(session_id)
        session.results[result.entry[0]] = result
        if result.key is not None and not result.follower:
            state.keys.hold(result.key, result.gid, session_id, result.entry[0])
    for session in state.sessions.values():
        session.gone_since = now
    for record in sorted(failed, key=lambda f: f.finished_at):
        # Rows an older broker stored may be of any size: bound them as
        # new ones are, so `broker failed` can always answer.
        record.args, record.kwargs, record.error, record.size = admission.bounded_failure(
            record.args, record.kwargs, record.error, state.failed_row_bytes
        )
        state.failed.append(record)
    gids = [j.gid for j in jobs[-1:]] + [r.gid for _, r in results] + [f.gid for f in failed]
    # Job ids must not repeat across restarts, even when the store is
    # empty: start past anything stored and past a clock-based floor.
    # Restored in parts: past what every part held.
    state._next_gid = max(state._next_gid, max(gids, default=0) + 1, int(now * 1_000_000))


def _restore_jobs(state: BrokerState, jobs: list[Job], now: float) -> None:
    """Queue restored jobs again, in the order they were accepted.

    A million of them must be back within a restart's time (bench item
    20), so this is `on_submit`'s plain path, not a job at a time through
    `_queue_or_wait`: jobs without options, of tasks without a limit,
    go to the dispatcher in runs, and the quota is counted once
    per session and part. Anything else (options, delays, limits, keys)
    takes the general path, after the plain jobs before it, so each
    session's jobs keep their order.
    """
    by_gid = state.jobs
    limited = state.limits.tasks
    served = state.served
    unserved: set[str] = set()  # marked already (in this part)
    # One int per size, not one per job: 32 bytes a job at a depth of millions.
    costs: dict[int, int] = {}
    session_id: str | None = None
    live: dict[int, int] = {}
    counted: dict[str, list[int]] = {}  # session -> [jobs, bytes]
    count = [0, 0]
    ready: list[Job] = []  # plain jobs of one line, in order
    line_task: str | None = None
    line_session: str | None = None
    for job in jobs:
        gid = job.gid
        by_gid[gid] = job
        cost = job.cost + JOB_OVERHEAD_BYTES
        job.cost = costs.setdefault(cost, cost)
        if job.session is not session_id:
            session_id = job.session
            live = state._session(session_id).live
            count = counted.setdefault(session_id, [0, 0])
        live[job.cid] = gid
        count[0] += 1
        count[1] += cost
        if job.options is None and (not limited or job.task not in limited):
            job.queued_at = now
            if job.task is not line_task or job.session is not line_session:
                # A new line (session and task; plain jobs share queue and priority).
                state.dispatcher.add_run(ready, now)
                ready = []
                line_task, line_session = job.task, job.session
                if job.task not in served and job.task not in unserved:
                    unserved.add(job.task)
                    state.unserved.mark(job.task, now)
            ready.append(job)
            continue
        if job.key is not None:
            state.keys.hold(job.key, gid, job.session, job.cid)
        state.dispatcher.add_run(ready, now)
        ready, line_task = [], None
        state._queue_or_wait(job)
    state.dispatcher.add_run(ready, now)
    for session, (n, total) in counted.items():
        state.quota.add_total(session, n, total)


def restore_settings(state: BrokerState, paused: list[str], schedules: list[dict[str, Any]]) -> None:
    """Paused queues and schedules, as the store kept them."""
    for queue in paused:
        state.dispatcher.pause(queue)
    for record in schedules:
        state.schedules.restore(Schedule.from_record(record))
