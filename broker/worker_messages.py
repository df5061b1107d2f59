"""What a worker says besides results: the credit it grants (how many more
jobs it can take), more task names than its hello could hold, jobs it hands
back unstarted (released: no attempt counted), and the jobs the server
could not send it (too large for its frames: they fail alone). Each ends
with a dispatch round. `BrokerState.on_credit`, `on_tasks`, `on_release`
and `on_unsendable` delegate here.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from sockpool.protocol import ProtocolError
from sockpool.protocol.limits import MAX_CREDIT, MAX_TASKS_PER_WORKER

from . import admission
from .records import WorkerInfo

if TYPE_CHECKING:
    from .state import BrokerState, Outbox


def on_credit(state: BrokerState, worker: WorkerInfo, credit: int) -> Outbox:
    if credit < 0:
        raise ProtocolError("credit must not be negative")
    if not worker.draining:
        worker.credit = min(worker.credit + credit, MAX_CREDIT)
    return state._dispatch()


def on_tasks(state: BrokerState, worker: WorkerInfo, tasks: list[str]) -> Outbox:
    """More task names for a worker whose hello could not hold them all.

    Raises:
        ProtocolError: the worker would serve more than MAX_TASKS_PER_WORKER.
    """
    new = set(tasks) - worker.tasks
    if len(worker.tasks) + len(new) > MAX_TASKS_PER_WORKER:
        raise ProtocolError(f"a worker may serve at most {MAX_TASKS_PER_WORKER} tasks")
    worker.tasks = worker.tasks | new
    state.served.update(new)
    return state._dispatch()


def on_unsendable(state: BrokerState, conn_id: int, gids: list[int], now: float) -> Outbox:
    """Jobs the server could not send to this worker (too large for its
    frames): they fail alone, and the worker gets its credit back."""
    worker = state.workers.get(conn_id)
    if worker is None:
        return []
    by_session: dict[str, list[list[Any]]] = {}
    for gid in gids:
        job = worker.leased.pop(gid, None)
        if job is None:
            continue
        job.worker = None
        worker.credit += 1
        error = admission.too_large_to_forward(state.max_frame_bytes)
        state.stats.remember_failure(job.task, worker.name or worker.address, error, now, session=job.session)
        state._finish(job, False, error, now, by_session)
    return state._deliver(by_session) + state._dispatch()


def on_release(state: BrokerState, worker: WorkerInfo, ids: list[int]) -> Outbox:
    """The worker hands back jobs it never started: no attempt counted."""
    for gid in reversed(ids):
        job = worker.leased.pop(gid, None)
        if job is not None:
            job.worker = None
            state._queue(job, front=True)
    return state._dispatch()
