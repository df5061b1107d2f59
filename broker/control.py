"""Control over jobs already sent: cancel, stop, follow a unique key, retry.

Functions over the pure `BrokerState` (driven by `now`, no I/O), kept out
of state.py because they are rules of their own:

1. Cancel is decided under the state's lock, so a cancel racing with a
   result has one outcome: whichever the broker handles first wins. A job
   that finished first stays finished (`finished`); a job cancelled first
   ends as `Cancelled`, and its worker's late result is dropped, as any
   result from a worker that no longer holds the lease (state rule 3).
2. A waiting job (ready, retrying, or waiting on a limit) is removed and
   never runs: `cancelled`. A leased job is left alone unless the cancel
   asks to `stop` it: then its lease ends now, its worker gets `stop` (it
   kills the process running it, as for a timeout, or skips it if it has
   not started), and it ends as `Cancelled`: `stopped`. A cancel is final:
   never retried, never listed among the failed jobs.
3. A cancel's reply (and every other message of that call) is sent only
   once the cancellation is on disk (the server defers the whole outbox),
   so a job the client was told is cancelled does not come back after a
   kill -9 of the broker.
4. A job with a unique key and followers is one job: cancelling it, from
   whichever submission, cancels it for all of them.
5. `retry` queues a failed job again as a fresh job (new broker id, new
   attempts) for the session that submitted it, under the same client id:
   the session gets a second result for it, which a client attached with
   `--attach` collects. Only a failed job whose arguments were kept whole
   can be retried (see admission.bounded_failure).
6. Who may act on what: the operator (`state.is_operator`) on any job; a
   client on its own session's jobs, and on a session whose ID it knows
   (a session ID is a capability, as for `--attach`). Jobs a client may
   not touch are answered as if they did not exist: `finished`, `missing`.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from sockpool.protocol import Results
from sockpool.protocol.control import (
    E_CANCELLED,
    OUTCOME_CANCELLED,
    OUTCOME_FINISHED,
    OUTCOME_RUNNING,
    OUTCOME_STOPPED,
    Cancel,
    CancelReply,
    Retry,
    RetryReply,
    Stop,
)
from sockpool.protocol.messages import Message, error_value

from .quota import JOB_OVERHEAD_BYTES
from .records import Job, Session, StoredResult

if TYPE_CHECKING:
    from .state import BrokerState

Outbox = list[tuple[int, Message]]


def cancelled_error(stopped: bool) -> dict[str, Any]:
    if stopped:
        return error_value(E_CANCELLED, "cancelled while running: its pool process was stopped")
    return error_value(E_CANCELLED, "cancelled before it ran")


def on_cancel(state: BrokerState, conn_id: int, session: Session, msg: Cancel, now: float) -> Outbox:
    """Cancel what `msg` names; the reply lists an outcome per id asked about."""
    targets = _targets(state, session, msg)
    if (msg.gids or msg.task) and not state.is_operator(conn_id):
        mine = session.session_id
        if msg.task:  # of a task: only the caller's own jobs of it
            targets = [(ident, job) for ident, job in targets if job is not None and job.session == mine]
        else:  # by broker id: another session's job is as good as absent
            targets = [(ident, job if job is not None and job.session == mine else None) for ident, job in targets]
    by_session: dict[str, list[list[Any]]] = {}
    stops: dict[int, list[int]] = {}
    waiting: dict[int, Job] = {}
    outcomes: list[list[Any]] = []
    for ident, job in targets:
        if job is None:
            outcomes.append([ident, OUTCOME_FINISHED])
        elif job.worker is not None:
            if not msg.stop:
                outcomes.append([ident, OUTCOME_RUNNING])
                continue
            worker = state.workers.get(job.worker)
            if worker is not None:
                worker.leased.pop(job.gid, None)
                worker.running.discard(job.gid)
                stops.setdefault(worker.conn_id, []).append(job.gid)
            job.worker = None
            state._finish(job, False, cancelled_error(True), now, by_session)
            outcomes.append([ident, OUTCOME_STOPPED])
        else:
            waiting[job.gid] = job
            outcomes.append([ident, OUTCOME_CANCELLED])
    if waiting:
        _unqueue(state, waiting)
        for job in waiting.values():
            state._finish(job, False, cancelled_error(False), now, by_session)
    out: Outbox = [(worker_conn, Stop(gids)) for worker_conn, gids in stops.items()]
    out += state._deliver(by_session)
    out.append((conn_id, CancelReply(outcomes)))
    return out + state._dispatch()


def _targets(state: BrokerState, session: Session, msg: Cancel) -> list[tuple[int, Job | None]]:
    """(id as asked, the unfinished job or None) for each job `msg` names."""
    if msg.gids:
        return [(gid, state.jobs.get(gid)) for gid in msg.gids]
    if msg.task:
        return [(job.gid, job) for job in state.jobs.values() if job.task == msg.task]
    owner = state.sessions.get(msg.session) if msg.session else session
    if owner is None:
        return [(cid, None) for cid in msg.ids]
    # A whole session only when named: an empty cancel cancels nothing.
    cids = msg.ids or (sorted(owner.live) if msg.session else [])
    return [(cid, state.jobs.get(owner.live.get(cid, -1))) for cid in cids]


def _unqueue(state: BrokerState, gone: dict[int, Job]) -> None:
    """Take waiting jobs out of the dispatcher's lines, the due heap
    (delayed jobs and retries) and the limits' lines."""
    gids = set(gone)
    state.dispatcher.remove_many(gids)
    state.due.remove_many(gids)
    state.limits.discard(gids)


def follow(state: BrokerState, session: Session, cid: int, key: str) -> Outbox:
    """A submit whose unique key is held: no new job; this submission gets
    the holder's outcome, now if it has one, else when it finishes."""
    holder = state.keys.holder(key)
    assert holder is not None
    state.totals["deduplicated"] += 1
    job = state.jobs.get(holder.gid)
    if job is not None:
        job.followers = (job.followers or []) + [(session.session_id, cid)]
        session.live[cid] = job.gid
        state.journal.append(("follow", session.session_id, cid, job.gid))
        return []
    owner = state.sessions.get(holder.session)
    result = owner.results.get(holder.cid) if owner is not None else None
    if result is None:  # cannot happen: the key is released with its result
        state.keys.release(holder.gid)
        return []
    entry = [cid, result.entry[1], result.entry[2]]
    session.results[cid] = StoredResult(holder.gid, entry, result.finished_at, follower=True)
    state.journal.append(("follow", session.session_id, cid, holder.gid))
    state.journal.append(("follow_result", session.session_id, cid, entry[1], entry[2], result.finished_at))
    assert session.conn_id is not None
    return [(session.conn_id, Results([entry]))]


def on_retry(state: BrokerState, conn_id: int, session: Session, msg: Retry, now: float) -> Outbox:
    """Queue failed jobs again for their sessions; reply with what was."""
    wanted = set(msg.gids)
    everyone = state.is_operator(conn_id)
    chosen = [
        f for f in state.failed
        if f.retryable and (everyone or f.session == session.session_id)
        and (f.gid in wanted if not msg.all else (not msg.task or f.task == msg.task))
    ]
    missing = sorted(wanted - {f.gid for f in chosen})
    retried: list[int] = []
    if chosen:
        gone = {f.gid for f in chosen}
        state.failed = deque(f for f in state.failed if f.gid not in gone)
        state.journal.append(("unfail", sorted(gone)))
    for failed in chosen:
        target = state._session(failed.session) if failed.session else None
        if target is not None:
            old = target.results.pop(failed.cid, None)
            if old is not None and not old.follower:
                state.keys.release(old.gid)
                state.journal.append(("forget", [old.gid]))
            if failed.cid in target.live:  # the client id is in use again: keep both apart
                target = None
        job = Job(state._next_gid, failed.session if target is not None else f"retry-{failed.gid}",
                  failed.cid, failed.task, failed.args, failed.kwargs, failed.many, failed.options)
        state._next_gid += 1
        # Counted against the quotas like any queued job (it comes off them when it ends).
        job.cost = failed.size + JOB_OVERHEAD_BYTES
        state.quota.add(job.session, job.cost)
        state.jobs[job.gid] = job
        state._session(job.session).live[job.cid] = job.gid
        state.journal.append(("add", job))
        if job.key is not None and state.keys.holder(job.key) is None:
            state.keys.hold(job.key, job.gid, job.session, job.cid)
        if target is None:
            state.sessions[job.session].gone_since = now  # nobody collects it: swept like a left session
        state.totals["submitted"] += 1
        state.stats.on_submitted(job.task, job.calls)
        state._queue(job)
        retried.append(failed.gid)
    return [(conn_id, RetryReply(retried, missing))] + state._dispatch()
