"""The broker's queue logic: jobs, workers, sessions and leases. No I/O.

`BrokerState` is a pure core. Every entry point takes the connection it
concerns, the message and `now`, and returns the replies to send as a list
of `(conn_id, message)`. It never blocks, sleeps, reads a clock or touches
a socket; the server holds one lock around it and does the sending.

Rules:
1. A job is in exactly one place: a ready queue, or leased to one worker.
2. A worker never holds more jobs than the credit it granted.
3. A result is accepted only from the worker holding the lease; anything
   else (a late result after a requeue) is dropped, never delivered twice.
4. Results go to the session that submitted the job, whichever connection
   that session is on now.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from protocol import (
    ROLE_CLIENT,
    ROLE_WORKER,
    Accepted,
    Credit,
    Hello,
    Jobs,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Results,
    StatusReply,
    StatusRequest,
    Submit,
    Welcome,
    check_hello,
    error_value,
)
from protocol.messages import E_UNKNOWN_TASK, PROTOCOL_VERSION

from .stats import BrokerStats

# How long results wait for a client that went away before they are dropped.
SESSION_TTL_S = 600.0

Outbox = list[tuple[int, Message]]


class Job:
    """One accepted job. Slots keep a queued job to a few hundred bytes."""

    __slots__ = (
        "gid", "session", "cid", "task", "args", "kwargs", "many", "worker", "calls", "submitted_at", "dispatched_at"
    )

    def __init__(
        self, gid: int, session: str, cid: int, task: str, args: list[Any], kwargs: dict[str, Any], many: bool
    ) -> None:
        self.gid = gid
        self.session = session
        self.cid = cid
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.many = many
        self.worker: int | None = None
        # For status and metrics: calls in this job, and when it was
        # submitted and last handed to a worker (the state's `now`).
        self.calls = len(args) if many else 1
        self.submitted_at = 0.0
        self.dispatched_at = 0.0

    def entry(self) -> list[Any]:
        """The job as sent to a worker: our id, not the client's."""
        return [self.gid, self.task, self.args, self.kwargs, self.many]


@dataclass
class WorkerInfo:
    conn_id: int
    name: str
    address: str
    tasks: frozenset[str]
    processes: int
    joined_at: float
    credit: int = 0
    leased: dict[int, Job] = field(default_factory=dict)
    done: int = 0
    failed: int = 0
    last_seen: float = 0.0


@dataclass
class Session:
    """A client's identity across reconnects; results are routed to it."""

    session_id: str
    conn_id: int | None
    pending: int = 0  # accepted jobs whose result it has not been sent
    undelivered: list[list[Any]] = field(default_factory=list)
    gone_since: float | None = None


class BrokerState:
    def __init__(self, name: str, max_frame_bytes: int, now: float = 0.0) -> None:
        self.name = name
        self.max_frame_bytes = max_frame_bytes
        self.jobs: dict[int, Job] = {}
        self.ready: dict[str, deque[Job]] = {}
        self.ready_count = 0
        self.workers: dict[int, WorkerInfo] = {}
        self.clients: dict[int, Session] = {}
        self.sessions: dict[str, Session] = {}
        self.served: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self._next_gid = 1
        # Observation only: counts for status and metrics, and the `now` of
        # the event being handled, for the timestamps they need.
        self.stats = BrokerStats()
        self.ready_calls = 0
        self.started_at = self.now = now

    # -- connections ---------------------------------------------------

    def on_hello(self, conn_id: int, hello: Hello, address: str, now: float) -> Outbox:
        """Admit a new connection. The first reply is a welcome or an error.

        Raises:
            ProtocolError: the hello is unacceptable (the error reply comes first).
        """
        self.now = now
        refusal = check_hello(hello)
        if refusal is not None:
            return [(conn_id, refusal)]
        session_id = ""
        if hello.role == ROLE_WORKER:
            self.workers[conn_id] = WorkerInfo(
                conn_id, hello.name, address, frozenset(hello.tasks), hello.processes, now, last_seen=now
            )
            self.served.update(set(hello.tasks))
        else:
            session_id = hello.session or f"s{conn_id}-{id(hello):x}"
            session = self.sessions.get(session_id)
            if session is None:
                session = self.sessions[session_id] = Session(session_id, conn_id)
            session.conn_id = conn_id
            session.gone_since = None
            self.clients[conn_id] = session
        welcome = Welcome(
            version=PROTOCOL_VERSION,
            broker=self.name,
            max_frame_bytes=self.max_frame_bytes,
            session=session_id,
            processes=self.total_processes,
        )
        out: Outbox = [(conn_id, welcome)]
        if hello.role == ROLE_CLIENT:
            out += self._flush_undelivered(self.clients[conn_id])
        return out

    def on_disconnect(self, conn_id: int, now: float) -> Outbox:
        """Forget a connection: a worker's leases go back to the front of the queue."""
        self.now = now
        worker = self.workers.pop(conn_id, None)
        if worker is not None:
            self.served.subtract(set(worker.tasks))
            self.served += Counter()  # drop zero counts
            for job in reversed(list(worker.leased.values())):
                job.worker = None
                self._queue(job, front=True)
            self.totals["requeued"] += len(worker.leased)
            return self._dispatch()
        session = self.clients.pop(conn_id, None)
        if session is not None and session.conn_id == conn_id:
            session.conn_id = None
            session.gone_since = now
        return []

    def role(self, conn_id: int) -> str | None:
        if conn_id in self.workers:
            return ROLE_WORKER
        if conn_id in self.clients:
            return ROLE_CLIENT
        return None

    # -- messages ------------------------------------------------------

    def on_message(self, conn_id: int, msg: Message, now: float) -> Outbox:
        """Handle one message from an admitted connection.

        Raises:
            ProtocolError: the message is not one this role may send.
        """
        self.now = now
        worker = self.workers.get(conn_id)
        if worker is not None:
            worker.last_seen = now  # any message, a pong too, shows it is alive
        if isinstance(msg, Ping):
            return [(conn_id, Pong())]
        if isinstance(msg, Pong):
            return []
        if isinstance(msg, StatusRequest) and conn_id in self.clients:
            return [(conn_id, StatusReply(self.status(now)))]
        if worker is not None:
            if isinstance(msg, Results):
                return self.on_results(worker, msg)
            if isinstance(msg, Credit):
                return self.on_credit(worker, msg.credit)
        elif conn_id in self.clients and isinstance(msg, Submit):
            return self.on_submit(self.clients[conn_id], msg)
        raise ProtocolError(f"unexpected {msg.type!r} from a {self.role(conn_id) or 'peer'}")

    def on_submit(self, session: Session, msg: Submit) -> Outbox:
        refused: list[list[Any]] = []
        for cid, task, args, kwargs, many in msg.jobs:
            if self.workers and task not in self.served:
                refused.append([cid, False, unknown_task(task)])
                self.stats.on_refused(task, refused[-1][2], self.now)
                continue
            job = Job(self._next_gid, session.session_id, cid, task, args, kwargs, many)
            self._next_gid += 1
            job.submitted_at = self.now
            self.stats.on_submitted(task, job.calls)
            self.jobs[job.gid] = job
            self._queue(job)
        accepted = len(msg.jobs) - len(refused)
        session.pending += accepted
        self.totals["submitted"] += accepted
        self.totals["refused"] += len(refused)
        assert session.conn_id is not None
        out: Outbox = [(session.conn_id, Accepted(msg.batch, accepted))]
        if refused:
            out.append((session.conn_id, Results(refused)))
        return out + self._dispatch()

    def on_credit(self, worker: WorkerInfo, credit: int) -> Outbox:
        if credit < 0:
            raise ProtocolError("credit must not be negative")
        worker.credit += credit
        return self._dispatch()

    def on_results(self, worker: WorkerInfo, msg: Results) -> Outbox:
        by_session: dict[str, list[list[Any]]] = {}
        leased = worker.leased
        for entry in msg.results:
            job = leased.pop(entry[0], None)
            if job is None:
                continue  # not ours (any more): a late result after a requeue
            del self.jobs[job.gid]
            self._count_finished(worker, job, entry[1], entry[2])
            entry[0] = job.cid
            by_session.setdefault(job.session, []).append(entry)
        self.totals["completed"] += sum(len(r) for r in by_session.values())
        out: Outbox = []
        for session_id, results in by_session.items():
            session = self.sessions.get(session_id)
            if session is None:
                continue  # expired while its jobs ran
            session.pending -= len(results)
            session.undelivered.extend(results)
            out += self._flush_undelivered(session)
        if msg.credit:
            out += self.on_credit(worker, msg.credit)
        return out

    def tick(self, now: float) -> Outbox:
        """Periodic housekeeping: forget sessions gone longer than their TTL."""
        self.now = now
        for session_id, session in list(self.sessions.items()):
            if session.gone_since is not None and now - session.gone_since > SESSION_TTL_S:
                del self.sessions[session_id]
        return []

    # -- queue -----------------------------------------------------------

    @property
    def total_processes(self) -> int:
        return sum(w.processes for w in self.workers.values())

    def _queue(self, job: Job, front: bool = False) -> None:
        queue = self.ready.get(job.task)
        if queue is None:
            queue = self.ready[job.task] = deque()
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)
        self.ready_count += 1
        self.ready_calls += job.calls

    def _dispatch(self) -> Outbox:
        """Hand ready jobs to workers with credit, each its fair share.

        The share is proportional to a worker's processes, so a worker that
        granted a large credit cannot take every queued job while another
        worker with free processes gets none (the prefetch hoarding users
        of other queues complain about).
        """
        if not self.ready_count:
            return []
        eligible = [w for w in self.workers.values() if w.credit > 0]
        if not eligible:
            return []
        eligible.sort(key=lambda w: len(w.leased) / w.processes)
        processes_left = sum(w.processes for w in eligible)
        ready_total = self.ready_count
        out: Outbox = []
        for worker in eligible:
            share = math.ceil(ready_total * worker.processes / processes_left)
            processes_left -= worker.processes
            batch = self._take(worker, min(worker.credit, share))
            if batch:
                out.append((worker.conn_id, Jobs(batch)))
            if not self.ready_count:
                break
        return out

    def _take(self, worker: WorkerInfo, limit: int) -> list[list[Any]]:
        batch: list[list[Any]] = []
        for task in worker.tasks:
            queue = self.ready.get(task)
            while queue and len(batch) < limit:
                job = queue.popleft()
                job.worker = worker.conn_id
                job.dispatched_at = self.now
                self.ready_calls -= job.calls
                worker.leased[job.gid] = job
                batch.append(job.entry())
            if queue is not None and not queue:
                del self.ready[task]
            if len(batch) >= limit:
                break
        worker.credit -= len(batch)
        self.ready_count -= len(batch)
        return batch

    def _flush_undelivered(self, session: Session) -> Outbox:
        if session.conn_id is None or not session.undelivered:
            return []
        results, session.undelivered = session.undelivered, []
        return [(session.conn_id, Results(results))]

    def snapshot(self) -> dict[str, Any]:
        """Counts for logs and status."""
        return {
            "ready": self.ready_count,
            "in_flight": sum(len(w.leased) for w in self.workers.values()),
            "workers": len(self.workers),
            "clients": len(self.clients),
            **self.totals,
        }

    # -- observation -----------------------------------------------------

    def _count_finished(self, worker: WorkerInfo, job: Job, ok: bool, value: Any) -> None:
        failed = self.stats.on_finished(
            job.task, job.calls, ok, value,
            wait_s=job.dispatched_at - job.submitted_at, run_s=self.now - job.dispatched_at,
            worker=worker.name or worker.address, now=self.now,
        )
        worker.done += job.calls - failed
        worker.failed += failed

    def status(self, now: float) -> dict[str, Any]:
        """Everything `broker status`, /metrics and the dashboard show, as a
        plain dict of msgpack- and JSON-ready values. Counts are in calls (a
        map chunk of N items is N calls); times are seconds ago, not clock
        readings. `delayed` and `failed` jobs are held by the retry and
        dead-letter bookkeeping, which reports them here once it exists.
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
                "last_seen_s": now - w.last_seen,
                "joined_s": now - w.joined_at,
            }
            for w in self.workers.values()
        ]
        stats = self.stats.to_dict(now)
        return {
            "broker": self.name,
            "uptime_s": now - self.started_at,
            "workers": workers,
            "processes": self.total_processes,
            "clients": len(self.clients),
            "queue": {
                "ready": self.ready_calls,
                "in_flight": sum(w["in_flight"] for w in workers),
                "delayed": 0,
                "failed": 0,
            },
            **stats,
            "totals": {**stats["totals"], "requeued": self.totals["requeued"], "retried": 0},
        }


def unknown_task(task: str) -> dict[str, Any]:
    return error_value(E_UNKNOWN_TASK, f"no connected worker serves task {task!r}")
