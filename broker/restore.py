"""Rebuilding `BrokerState` from what the store kept, after a restart or a
failover: unfinished jobs queued again, results waiting for their
sessions, failed jobs listable, unique keys and their followers held
again, paused queues and schedules as they were.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from . import admission
from .quota import JOB_OVERHEAD_BYTES
from .records import FailedJob, Job, StoredResult
from .schedules import Schedule

if TYPE_CHECKING:
    from .state import BrokerState


def restore(
    state: BrokerState, jobs: list[Job], results: list[tuple[str, StoredResult]], failed: list[FailedJob], now: float,
    followers: list[tuple[str, int, int]] | None = None,
) -> None:
    """Rebuild from the store after a restart: unfinished jobs are queued
    again (those that were running included), results wait for their
    sessions, failed jobs stay listable; unique keys are held again by
    the jobs that held them, and their followers follow again."""
    state.now = now
    for job in sorted(jobs, key=lambda j: j.gid):
        state.jobs[job.gid] = job
        job.cost += JOB_OVERHEAD_BYTES
        state.quota.add(job.session, job.cost)
        state._session(job.session).live[job.cid] = job.gid
        if job.key is not None:
            state.keys.hold(job.key, job.gid, job.session, job.cid)
        state._queue_or_wait(job)
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
    gids = [j.gid for j in jobs] + [r.gid for _, r in results] + [f.gid for f in failed]
    # Job ids must not repeat across restarts, even when the store is
    # empty: start past anything stored and past a clock-based floor.
    # Restored in parts: past what every part held.
    state._next_gid = max(state._next_gid, max(gids, default=0) + 1, int(now * 1_000_000))


def restore_settings(state: BrokerState, paused: list[str], schedules: list[dict[str, Any]]) -> None:
    """Paused queues and schedules, as the store kept them."""
    for queue in paused:
        state.dispatcher.pause(queue)
    for record in schedules:
        state.schedules.restore(Schedule.from_record(record))
