"""How a job leaves a worker: counted as a run, retried later with backoff,
put back after its worker was lost (or given up on as poison), failed
because no worker serves its task, or finished. Finishing is where the
result is kept for its session (or not), a failure recorded for
`broker failed`, limit slots and unique keys released, followers and
schedules told; `deliver` sends the results to the connections of
their sessions.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from sockpool.protocol import Results, error_value
from sockpool.protocol.control import E_CANCELLED
from sockpool.protocol.defaults import MAX_LOST_ATTEMPTS, MAX_REQUEUES, RETRY_BASE_S, RETRY_MAX_S
from sockpool.protocol.messages import DEFAULT_QUEUE, E_POISON, E_UNKNOWN_TASK, NOT_RETRYABLE, RESULT_DETACHED, RESULT_NONE
from . import admission
from .firing import schedule_outcome
from .records import FailedJob, Job, StoredResult, WorkerInfo
from .schedules import SESSION_PREFIX
from .unserved import unknown_task_message

if TYPE_CHECKING:
    from .state import BrokerState, Outbox


def count_run(state: BrokerState, worker: WorkerInfo, job: Job, ok: bool, value: Any) -> int:
    """Time a run whose result came back and count it for its worker;
    returns how many of its calls failed."""
    failed = state.stats.on_ran(
        job.calls, ok, value, wait_s=job.dispatched_at - job.queued_at, run_s=state.now - job.dispatched_at
    )
    worker.done += job.calls - failed
    worker.failed += failed
    return failed


def count_ok_runs(state: BrokerState, worker: WorkerInfo, jobs: list[Job]) -> None:
    """`count_run` for the jobs of one results frame that succeeded, in one go."""
    now = state.now
    waits = [job.dispatched_at - job.queued_at for job in jobs]
    state.stats.on_ran_ok(waits, [now - job.dispatched_at for job in jobs])
    worker.done += sum(job.calls for job in jobs)


def should_retry(state: BrokerState, job: Job, error: Any) -> bool:
    kind = error.get("type") if isinstance(error, dict) else None
    return kind not in NOT_RETRYABLE and job.attempts <= job.retries


def retry_later(state: BrokerState, job: Job, now: float) -> None:
    """Exponential backoff with jitter, so that retries do not stampede."""
    delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (job.attempts - 1)) * state.rng.uniform(0.5, 1.5)
    state.due.push(job, now + delay)
    # Waiting for a retry is not running: its limit slots go to others
    # (to its successor first, already at its worker: broker/succession.py).
    succession = state.succession
    if job.limits and not ((succession.holders or succession.next) and succession.pass_on(job)):
        for admitted in state.limits.release(job, now):
            state._ready(admitted)
    state.totals["retried"] += 1
    state.journal.append(("attempts", job.gid, job.attempts))


def lost(state: BrokerState, job: Job, was_running: bool, now: float) -> Outbox:
    """Its worker went away while holding the job."""
    job.worker = None
    job.requeues += 1
    state.totals["requeued"] += 1
    if was_running:
        job.attempts += 1
        state.journal.append(("attempts", job.gid, job.attempts))
    lost_runs = job.attempts if was_running else 0
    if lost_runs >= MAX_LOST_ATTEMPTS or job.requeues >= MAX_REQUEUES:
        error = error_value(
            E_POISON, f"the workers running this job died {job.requeues} times; giving up on it"
        )
        by_session: dict[str, list[list[Any]]] = {}
        state.stats.remember_failure(job.task, "", error, now, session=job.session)
        finish(state, job, False, error, now, by_session)
        return deliver(state, by_session)
    state._queue(job, front=True)
    return []


def fail_unserved(state: BrokerState, task: str, waited_s: float, now: float) -> Outbox:
    """No worker came for `task` in time: its queued jobs fail (retries
    could not help; they fail whole)."""
    queue = state.dispatcher.take_task(task)
    if not queue:
        return []
    error = error_value(E_UNKNOWN_TASK, unknown_task_message(task, state.served, waited_s))
    state.stats.remember_failure(task, "", error, now)
    by_session: dict[str, list[list[Any]]] = {}
    for job in queue:
        finish(state, job, False, error, now, by_session)
    return deliver(state, by_session)


def finish(
    state: BrokerState, job: Job, ok: bool, value: Any, now: float, by_session: dict[str, list[list[Any]]]
) -> None:
    del state.jobs[job.gid]
    state.quota.remove(job.session, job.cost)
    cancelled = not ok and isinstance(value, dict) and value.get("type") == E_CANCELLED
    if not cancelled:  # a cancel is nobody's failure: counted apart
        state.stats.on_finished(job.task, job.calls, ok, value, now, job.queue)
    state.totals["completed" if ok else "cancelled" if cancelled else "failed"] += 1
    options = job.options
    # Whether the store may hold this finish back for its ack (store/base.py
    # `FinishHolds`): only for a success that its submitter alone reads. A
    # detached result, a keyed job (its followers, later joiners) and a
    # failure (listed by `broker failed`) are read by others: written now.
    may_wait = ok and not job.followers and (
        options is None or (options.get("result") != RESULT_DETACHED and options.get("key") is None))
    state.journal.append(("finish", job.gid, ok, value, now, may_wait))
    if not ok and not cancelled:
        job_args, job_kwargs, job_many, job_options = job.values()
        args, kwargs, error, size = admission.bounded_failure(job_args, job_kwargs, value, state.failed_row_bytes)
        # Kept whole, it can be retried as it was sent; cut down, it cannot.
        retryable = args is job_args and kwargs is job_kwargs
        record = FailedJob(job.gid, job.task, args, kwargs, error, job.attempts, now, job.session, size,
                           job.cid, job_options if retryable else None, job_many, retryable)
        state.failed.append(record)
        state.journal.append(("failed", record))
    # What a job does not use costs it nothing: no limit slots to give
    # back, no followers, no options to read.
    if job.limits:
        succession = state.succession
        if not ((succession.holders or succession.next) and succession.pass_on(job)):
            for admitted in state.limits.release(job, now):
                state._ready(admitted)
    elif state.succession.after:
        state.succession.forget(job)  # a successor that ended before its holder
    if job.followers:
        for session_id, cid in job.followers:
            follower = state.sessions.get(session_id)
            if follower is not None and follower.live.pop(cid, None) is not None:
                entry = [cid, ok, value]
                follower.results[cid] = StoredResult(job.gid, entry, now, follower=True)
                by_session.setdefault(session_id, []).append(entry)
    if job.session.startswith(SESSION_PREFIX):
        schedule_outcome(state, job, ok, value, now)
        return
    session = state.sessions.get(job.session)
    if session is not None:
        session.live.pop(job.cid, None)
    mode = options.get("result") if options else None  # job.result_mode
    if mode == RESULT_NONE or session is None or (session.abandoned and mode != RESULT_DETACHED):
        # Nobody will collect it: keep nothing (a failure stays listed
        # above, for `broker failed`).
        state.journal.append(("forget", [job.gid]))
        state.keys.release(job.gid)
        return
    entry = [job.cid, ok, value]
    key = options.get("key") if options else None  # job.key
    session.results[job.cid] = StoredResult(job.gid, entry, now, mode == RESULT_DETACHED, key=key)
    by_session.setdefault(job.session, []).append(entry)


def finish_succeeded(
    state: BrokerState, jobs: list[Job], values: list[Any], now: float, by_session: dict[str, list[list[Any]]]
) -> None:
    """`finish` for the successes of one results frame, in one go. A plain
    job (no options, limits or followers) of a client's live session needs
    only its own entries (its result kept and sent, its journal entry);
    the counts, the quota and the throughput are added once per frame.
    Any other job takes `finish`."""
    counted: dict[str, int] = {}  # calls per task
    done = 0
    session = None
    # The quota is given back once per run of one session's jobs, not per
    # job: nothing reads it between the jobs of one frame.
    quota = state.quota
    quota_session, quota_count, quota_bytes = "", 0, 0
    for job, value in zip(jobs, values):
        if job.options is not None or job.limits or job.followers:
            finish(state, job, True, value, now, by_session)
            continue
        if session is None or session.session_id != job.session:
            if quota_count:
                quota.remove_many(quota_session, quota_count, quota_bytes)
                quota_count = quota_bytes = 0
            session = state.sessions.get(job.session)
            if session is None or session.abandoned or job.session.startswith(SESSION_PREFIX):
                session = None
            else:
                live, results = session.live, session.results
                sent = by_session.setdefault(job.session, [])
        if session is None:  # kept for nobody, or a schedule's
            finish(state, job, True, value, now, by_session)
            continue
        gid, cid = job.gid, job.cid
        del state.jobs[gid]
        live.pop(cid, None)
        entry = [cid, True, value]
        results[cid] = StoredResult(gid, entry, now)
        sent.append(entry)
        # Only its submitter reads it: the store may hold it for the ack (store/holds.py).
        state.journal.append(("finish", gid, True, value, now, True))
        quota_session = job.session
        quota_count += 1
        quota_bytes += job.cost
        counted[job.task] = counted.get(job.task, 0) + job.calls
        done += 1
    if quota_count:
        quota.remove_many(quota_session, quota_count, quota_bytes)
    if done:
        state.stats.on_succeeded(counted, now, DEFAULT_QUEUE)  # a plain job's queue
        state.totals["completed"] += done


def deliver(state: BrokerState, by_session: dict[str, list[list[Any]]]) -> Outbox:
    out: Outbox = []
    for session_id, results in by_session.items():
        conn_id = state.sessions[session_id].conn_id
        if conn_id is not None:
            out.append((conn_id, Results(results)))
    return out
