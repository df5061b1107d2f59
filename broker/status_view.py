"""What the broker reports about itself: the counts for logs (`snapshot`), the
full `status` that `broker status`, /metrics and the dashboard show, and the
pages of failed jobs `broker failed` lists. Reads `BrokerState`, never
changes it.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from sockpool.protocol import FailedJobs, ListFailed
from . import operations
from .firing import queue_status
from .records import Session
from .stats import EVERYONE

if TYPE_CHECKING:
    from .state import BrokerState

# Tasks listed in status as waiting for a worker, at most.
MAX_UNSERVED_SHOWN = 20
# Room in a reply frame for everything but its rows.
_REPLY_OVERHEAD_BYTES = 256


def failed_jobs(state: BrokerState, conn_id: int, session: Session, msg: ListFailed) -> FailedJobs:
    """One page of the failed jobs this connection may see: its own
    session's, or every session's for the operator. A page always fits
    a frame, because every record is bounded well under one."""
    visible = (
        list(state.failed) if state.is_operator(conn_id)
        else [f for f in state.failed if f.session == session.session_id]
    )
    budget = state.max_frame_bytes - _REPLY_OVERHEAD_BYTES
    rows: list[list[Any]] = []
    offset = max(0, msg.offset)
    for record in visible[offset:]:
        if rows and budget < record.size:
            break
        budget -= record.size
        rows.append(record.row())
    return FailedJobs(rows, offset, offset + len(rows) < len(visible))


def snapshot(state: BrokerState) -> dict[str, Any]:
    """Counts for logs and status."""
    return {
        "ready": state.ready_count,
        "in_flight": sum(len(w.leased) for w in state.workers.values()),
        "delayed": len(state.due),
        "waiting_on_limit": state.limits.waiting,
        "failed": len(state.failed),
        "workers": len(state.workers),
        "clients": len(state.clients),
        **state.totals,
    }


def unserved_status(state: BrokerState, now: float) -> list[dict[str, Any]]:
    connected = bool(state.workers)
    return [
        {"task": task, "jobs": state.dispatcher.by_task.get(task, 0), "waiting_s": now - since,
         "fails_in_s": max(0.0, state.unserved.deadline(task, connected) - now)}
        for task, since in state.unserved.oldest(MAX_UNSERVED_SHOWN)
    ]


def status(state: BrokerState, now: float, viewer: str | None = EVERYONE) -> dict[str, Any]:
    """Everything `broker status`, /metrics and the dashboard show, as a
    plain dict of msgpack- and JSON-ready values. Counts are in calls (a
    map chunk of N items is N calls), except `queue.failed`: the failed
    jobs kept for `broker failed`. Times are seconds ago, not clock
    readings. A worker's `done` and `failed` count every run it
    reported, retried ones included.
    """
    workers = [
        {
            "name": w.name,
            "address": w.address,
            "processes": w.processes,
            "tasks": len(w.tasks),
            "in_flight": sum(job.calls for job in w.leased.values()),
            "done": w.done,
            "failed": w.failed,
            "draining": w.draining,
            "last_seen_s": now - w.last_seen,
            "joined_s": now - w.joined_at,
        }
        for w in state.workers.values()
    ]
    stats = state.stats.to_dict(now, viewer)
    return {
        "broker": state.name,
        "uptime_s": now - state.started_at,
        "workers": workers,
        "processes": state.total_processes,
        "clients": len(state.clients),
        # Results kept for sessions to collect (fire-and-forget jobs keep none).
        "results_kept": sum(len(s.results) for s in state.sessions.values()),
        # Queued jobs that no connected worker can run, per task, and
        # when they fail with UnknownTask unless one joins.
        "unserved": unserved_status(state, now),
        # Why new jobs are refused right now ("" while the store writes).
        "store_refusal": state.store_refusal["message"] if state.store_refusal else "",
        "queue": {
            "ready": state.ready_calls,
            "in_flight": sum(w["in_flight"] for w in workers),
            "delayed": state.due.calls,
            "waiting_on_limit": sum(job.calls for job in state.limits.waiting_jobs()),
            "failed": len(state.failed),
        },
        "limits": state.limits.status(now),
        "unique_keys": len(state.keys),
        "queues": queue_status(state, now),
        # A schedule's arguments and its last failure's message are the
        # operator's to see, like failure messages.
        "schedules": [
            operations.schedule_row(s, full=viewer == EVERYONE)
            for s in sorted(state.schedules.by_name.values(), key=lambda s: s.name)
        ],
        **stats,
        "totals": {
            **stats["totals"], "requeued": state.totals["requeued"], "retried": state.totals["retried"],
            "cancelled": state.totals["cancelled"], "deduplicated": state.totals["deduplicated"],
            "passed_on": state.succession.passed,
        },
    }
