"""The broker's queue logic: jobs, workers, sessions, leases, retries. No I/O.

`BrokerState` is a pure core. Every entry point takes the connection it
concerns, the message and `now`, and returns the replies to send as a list
of `(conn_id, message)`. It never blocks, sleeps, reads a clock or touches
a socket; the server holds one lock around it and does the sending. What
must survive a restart is appended to `journal` as plain tuples, which the
server hands to the store (see broker/store/); `restore` rebuilds the
state from what the store kept.

`now` is wall-clock seconds: the times it stamps are stored and compared
after a restart. A jump of the system clock can at worst end a heartbeat
or a retry delay early.

Rules:
1. A job is in exactly one place: ready in the dispatcher, waiting for
   its time in `due` (a delayed job or a retry), or leased to one worker.
   Which ready job a worker gets is broker/dispatch.py's decision.
2. A worker never holds more jobs than the credit it granted.
3. A result is accepted only from the worker holding the lease; anything
   else (a late result after a requeue) is dropped, never delivered twice.
4. Results go to the session that submitted the job, whichever connection
   that session is on now, and stay until the session acknowledges them,
   or its client has been gone for `session_grace_s` (then only detached
   jobs' results stay, until their TTL). A fire-and-forget job's result is
   not kept at all; a failure of any job is kept for `broker failed`.
5. Only a run that really happened counts as an attempt: a result, a
   crash or timeout reported by the worker, or the loss of a worker whose
   last heartbeat said the job was running. Prefetched jobs go back free,
   and so does everything a draining worker (one that sent `drain`) still
   held when it left: it was asked to stop, the jobs did nothing wrong.
6. A session that asked for them (hello.started) gets one `started`
   message per dispatch round naming its jobs that went to a worker, and
   after each welcome the jobs workers hold now. Others get none: bulk
   submitters pay nothing for it.
7. A job under a concurrency limit enters the ready queue only once
   admitted (broker/limits.py); until then it waits in the limit's line.

Control over jobs already sent (cancel, retry from failed) lives in
broker/control.py, the unique-key index in broker/keys.py. This module
keeps the entry points and the queue; the rest of the core is split by
idea, as functions taking the state that `BrokerState` delegates to:
admitting and forgetting connections in broker/connections.py, what a
worker says besides results (credit, tasks, releases) in
broker/worker_messages.py, how a run ends in broker/outcomes.py, handing
jobs out to workers in broker/handout.py, accepting (or refusing) a
submit's jobs in broker/submission.py, the ticker's periodic work
(heartbeats, due jobs, sweeps) in broker/periodic.py, forgetting with
time in broker/expiry.py, rebuilding after a restart in
broker/restore.py, and reporting (status, snapshot, failed pages) in
broker/status_view.py.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any

from sockpool.protocol import (
    ROLE_CLIENT,
    ROLE_OPERATOR,
    ROLE_WORKER,
    Ack,
    Control,
    Credit,
    Drain,
    Error,
    FailedJobs,
    Hello,
    ListFailed,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Release,
    Results,
    StatusReply,
    StatusRequest,
    Submit,
    Tasks,
)
from sockpool.protocol.defaults import (
    FAILED_ROW_MAX_BYTES,
    HEARTBEAT_S,
    RESULT_TTL_S,
    SESSION_GRACE_S,
    UNSERVED_GRACE_S,
    UNSERVED_TIMEOUT_S,
)
from sockpool.protocol.limits import MAX_NESTING

from sockpool.protocol.control import Cancel, Retry

from . import (
    admission, connections, control, expiry, handout, operations, outcomes, periodic, restore, status_view,
    submission, worker_messages,
)
from .dispatch import Dispatcher, DueJobs
from .keys import KeyIndex
from .limits import Limits, LimitSpec
from .succession import Succession
from .quota import Quota
from .records import FailedJob, Job, Session, StoredResult, WorkerInfo
from .schedules import Schedules
from .stats import EVERYONE, BrokerStats
from .status_view import _REPLY_OVERHEAD_BYTES
from .unserved import UnservedTasks

Outbox = list[tuple[int, Message]]


class BrokerState:
    def __init__(
        self,
        name: str,
        max_frame_bytes: int,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        result_ttl_s: float = RESULT_TTL_S,
        session_grace_s: float = SESSION_GRACE_S,
        unserved_grace_s: float = UNSERVED_GRACE_S,
        unserved_timeout_s: float = UNSERVED_TIMEOUT_S,
        rng: random.Random | None = None,
        now: float = 0.0,
        limits: dict[str, LimitSpec] | None = None,
        quota: Quota | None = None,
    ) -> None:
        self.name = name
        self.max_frame_bytes = max_frame_bytes
        self.quota = quota or Quota()
        # A failed job's record is kept at most this large, so a page of
        # `broker failed` holds at least a few and never outgrows a frame.
        self.failed_row_bytes = min(FAILED_ROW_MAX_BYTES, (max_frame_bytes - _REPLY_OVERHEAD_BYTES) // 4)
        self.heartbeat_s = heartbeat_s
        self.result_ttl_s = result_ttl_s
        self.session_grace_s = session_grace_s
        self.rng = rng or random.Random()
        self.jobs: dict[int, Job] = {}
        self.dispatcher = Dispatcher()
        self.due = DueJobs()  # delayed jobs and retries, until their time
        self.schedules = Schedules()
        # Set by a control operation that may free jobs (a resumed queue).
        self.wants_dispatch = False
        self.workers: dict[int, WorkerInfo] = {}
        self.clients: dict[int, Session] = {}
        self.sessions: dict[str, Session] = {}
        # Client connections admitted with the operator role (see is_operator).
        self.operators: set[int] = set()
        self.failed: deque[FailedJob] = deque()
        self.last_seen: dict[int, float] = {}
        self.served: Counter[str] = Counter()
        self.unserved = UnservedTasks(unserved_grace_s, unserved_timeout_s)
        self.totals: Counter[str] = Counter()
        self.journal: list[tuple[Any, ...]] = []
        # While the store cannot write: the error new submissions get.
        self.store_refusal: dict[str, Any] | None = None
        self.limits = Limits(limits)
        self.succession = Succession()
        self.keys = KeyIndex()
        self._next_gid = 1
        self._next_ping = 0.0
        self._next_sweep = 0.0
        self._next_abandon_check = 0.0
        # Observation only: counts for status and metrics, and the `now` of
        # the event being handled, for the timestamps they need.
        self.stats = BrokerStats()
        self.started_at = self.now = now

    # -- connections ---------------------------------------------------

    def on_hello(self, conn_id: int, hello: Hello, address: str, now: float) -> Outbox:
        """See `connections.on_hello`."""
        return connections.on_hello(self, conn_id, hello, address, now)

    def on_disconnect(self, conn_id: int, now: float) -> Outbox:
        """See `connections.on_disconnect`."""
        return connections.on_disconnect(self, conn_id, now)

    def role(self, conn_id: int) -> str | None:
        if conn_id in self.workers:
            return ROLE_WORKER
        if conn_id in self.clients:
            return ROLE_OPERATOR if conn_id in self.operators else ROLE_CLIENT
        return None

    def is_operator(self, conn_id: int) -> bool:
        """Whether this connection proved the operator's secret (or the broker
        has none for that role). The one check for every request that acts
        beyond the caller's own session: `list_failed` of every session, and
        whatever job control the operator gets."""
        return conn_id in self.operators

    # -- messages ------------------------------------------------------

    def on_message(self, conn_id: int, msg: Message, now: float, frame_bytes: int = 0) -> Outbox:
        """Handle one message from an admitted connection; `frame_bytes` is
        the size of the frame it came in (0: unknown, taken as small).

        Raises:
            ProtocolError: the message is not one this role may send.
        """
        self.now = now
        self.last_seen[conn_id] = now
        worker = self.workers.get(conn_id)
        if worker is not None:
            worker.last_seen = now  # for status: heartbeats and results alike
        if isinstance(msg, Ping):
            if worker is not None:
                worker.running = set(msg.running)
            return [(conn_id, Pong())]
        if isinstance(msg, Pong):
            return []
        if worker is not None:
            if isinstance(msg, Results):
                return self.on_results(worker, msg, now)
            if isinstance(msg, Credit):
                return self.on_credit(worker, msg.credit)
            if isinstance(msg, Release):
                return self.on_release(worker, msg.ids)
            if isinstance(msg, Tasks):
                return self.on_tasks(worker, msg.tasks)
            if isinstance(msg, Drain):
                worker.draining = True
                worker.credit = 0
                return []
        session = self.clients.get(conn_id)
        if session is not None:
            # Two connections may share a session (a client reconnecting
            # before its old connection timed out): the one that spoke last
            # gets the session's results.
            session.conn_id = conn_id
            session.gone_since = None
            if isinstance(msg, Submit):
                return self.on_submit(session, msg, frame_bytes)
            if isinstance(msg, Ack):
                return self.on_ack(session, msg)
            if isinstance(msg, ListFailed):
                return [(conn_id, self.failed_jobs(conn_id, session, msg))]
            if isinstance(msg, StatusRequest):
                viewer = EVERYONE if self.is_operator(conn_id) else session.session_id
                status = admission.fit_status(self.status(now, viewer), self.max_frame_bytes - _REPLY_OVERHEAD_BYTES)
                return [(conn_id, StatusReply(status))]
            if isinstance(msg, Cancel):
                return control.on_cancel(self, conn_id, session, msg, now)
            if isinstance(msg, Retry):
                return control.on_retry(self, conn_id, session, msg, now)
            if isinstance(msg, Control):
                reply = operations.handle(self, msg.op, msg.args, now, self.is_operator(conn_id))
                out: Outbox = [(conn_id, reply)]
                if self.wants_dispatch:
                    self.wants_dispatch = False
                    out += self._dispatch()
                return out
        raise ProtocolError(f"unexpected {msg.type!r} from a {self.role(conn_id) or 'peer'}")

    def failed_jobs(self, conn_id: int, session: Session, msg: ListFailed) -> FailedJobs:
        """See `status_view.failed_jobs`."""
        return status_view.failed_jobs(self, conn_id, session, msg)

    def on_store_health(self, refusal: dict[str, Any] | None) -> Outbox:
        """The store cannot write (`refusal`: the error new jobs get) or
        writes again (None). Clients hear of a refusal at once, so one
        waiting for room to submit can give up instead of waiting."""
        self.store_refusal = refusal
        if refusal is None:
            return []
        return [(conn_id, Error(refusal["type"], refusal["message"])) for conn_id in self.clients]

    def on_submit(self, session: Session, msg: Submit, frame_bytes: int = 0) -> Outbox:
        """See `submission.on_submit`."""
        return submission.on_submit(self, session, msg, frame_bytes)

    def on_credit(self, worker: WorkerInfo, credit: int) -> Outbox:
        """See `worker_messages.on_credit`."""
        return worker_messages.on_credit(self, worker, credit)

    def on_tasks(self, worker: WorkerInfo, tasks: list[str]) -> Outbox:
        """See `worker_messages.on_tasks`."""
        return worker_messages.on_tasks(self, worker, tasks)

    def on_unsendable(self, conn_id: int, gids: list[int], now: float) -> Outbox:
        """See `worker_messages.on_unsendable`."""
        return worker_messages.on_unsendable(self, conn_id, gids, now)

    def on_release(self, worker: WorkerInfo, ids: list[int]) -> Outbox:
        """See `worker_messages.on_release`."""
        return worker_messages.on_release(self, worker, ids)

    def on_results(self, worker: WorkerInfo, msg: Results, now: float) -> Outbox:
        if msg.credit < 0:  # refuse before anything changes: no result is half-handled
            raise ProtocolError("credit must not be negative")
        by_session: dict[str, list[list[Any]]] = {}
        leased = worker.leased
        # One walk over the batch; per entry only if something is too deep.
        deep = admission.any_nested_value(msg.results) and admission.too_deep(msg.results, MAX_NESTING + 2)
        succeeded: list[Job] = []  # counted and finished together, after the walk
        values: list[Any] = []
        for entry in msg.results:
            job = leased.pop(entry[0], None)
            if job is None:
                continue  # not leased to this worker (any more): a late result
            job.worker = None
            job.attempts += 1
            ok, value = entry[1], entry[2]
            if deep or not ok:
                ok, value = admission.checked_result(ok, value)
            if ok:
                succeeded.append(job)
                values.append(value)
                continue
            self._count_run(worker, job, ok, value)
            retrying = self._should_retry(job, value)
            self.stats.remember_failure(
                job.task, worker.name or worker.address, value, now, retrying, session=job.session
            )
            if retrying:
                self._retry_later(job, now)
                continue
            self._finish(job, ok, value, now, by_session)
        if succeeded:
            outcomes.count_ok_runs(self, worker, succeeded)
            outcomes.finish_succeeded(self, succeeded, values, now, by_session)
        out = self._deliver(by_session)
        if msg.credit:
            out += self.on_credit(worker, msg.credit)
        return out + self._dispatch()

    def on_ack(self, session: Session, msg: Ack) -> Outbox:
        cids = list(session.results) if msg.all else msg.ids
        gone: list[int] = []
        for cid in cids:
            result = session.results.pop(cid, None)
            if result is None:
                continue
            if result.follower:
                self.journal.append(("unfollow", session.session_id, cid))
            else:
                gone.append(result.gid)
                self.keys.release(result.gid)
        if gone:
            self.journal.append(("forget", gone))
        return []

    def tick(self, now: float) -> Outbox:
        """See `periodic.tick`."""
        return periodic.tick(self, now)

    def take_silent_connections(self, now: float) -> list[int]:
        """See `periodic.take_silent_connections`."""
        return periodic.take_silent_connections(self, now)

    # -- failure handling ------------------------------------------------

    def _should_retry(self, job: Job, error: Any) -> bool:
        return outcomes.should_retry(self, job, error)

    def _retry_later(self, job: Job, now: float) -> None:
        """See `outcomes.retry_later`."""
        outcomes.retry_later(self, job, now)

    def _lost(self, job: Job, was_running: bool, now: float) -> Outbox:
        """See `outcomes.lost`."""
        return outcomes.lost(self, job, was_running, now)

    def _fail_unserved(self, task: str, waited_s: float, now: float) -> Outbox:
        """See `outcomes.fail_unserved`."""
        return outcomes.fail_unserved(self, task, waited_s, now)

    def _finish(self, job: Job, ok: bool, value: Any, now: float, by_session: dict[str, list[list[Any]]]) -> None:
        outcomes.finish(self, job, ok, value, now, by_session)

    def _deliver(self, by_session: dict[str, list[list[Any]]]) -> Outbox:
        return outcomes.deliver(self, by_session)

    def _sweep(self, now: float) -> None:
        expiry.sweep(self, now)

    def _abandon_gone_sessions(self, now: float) -> None:
        """See `expiry.abandon_gone_sessions`."""
        expiry.abandon_gone_sessions(self, now)

    # -- queue -----------------------------------------------------------

    @property
    def total_processes(self) -> int:
        return sum(w.processes for w in self.workers.values())

    def take_gid(self) -> int:
        """A new broker job id (for jobs the broker makes itself: firings)."""
        gid = self._next_gid
        self._next_gid += 1
        return gid

    def session(self, session_id: str) -> Session:
        """The session, created if new."""
        return self._session(session_id)

    def make_ready(self, job: Job) -> None:
        """Queue an accepted job for dispatch (the next `_dispatch` hands it out)."""
        self._queue(job)

    def _session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = Session(session_id, None)
        return session

    @property
    def ready_count(self) -> int:
        return self.dispatcher.count

    @property
    def ready_calls(self) -> int:
        return self.dispatcher.calls

    def next_due(self) -> float | None:
        """When the earliest waiting job or schedule falls due, for the ticker to wake then."""
        times = [t for t in (self.due.next_due(), self.schedules.next_due()) if t is not None]
        return min(times, default=None)

    def _queue_or_wait(self, job: Job) -> None:
        at = job.at
        if at is not None and at > self.now:
            self.due.push(job, at)
        else:
            self._queue(job)

    def _queue(self, job: Job, front: bool = False) -> None:
        """Into the ready queue, once its limits admit it (a job that holds
        its slots already, back from a lost worker, goes straight in)."""
        # A job with no options, of a task with no limit of its own, is under
        # no limit: the plain path skips the limits altogether.
        limits = self.limits
        if job.limits is None and (job.options or job.task in limits.tasks):
            if self.succession.after:
                self.succession.forget(job)  # a successor back before its holder ended
            if not limits.admit(job, self.now, front):
                job.queued_at = self.now
                return
        self._ready(job, front)

    def _ready(self, job: Job, front: bool = False) -> None:
        """Hand the job to the dispatcher (broker/dispatch.py decides who runs it when)."""
        job.queued_at = self.now
        if job.task not in self.served:
            self.unserved.mark(job.task, self.now)
        self.dispatcher.add(job, self.now, front)

    def _dispatch(self) -> Outbox:
        """See `handout.dispatch`."""
        return handout.dispatch(self)

    # -- persistence -----------------------------------------------------

    def take_journal(self) -> list[tuple[Any, ...]]:
        journal, self.journal = self.journal, []
        return journal

    def restore(
        self, jobs: list[Job], results: list[tuple[str, StoredResult]], failed: list[FailedJob], now: float,
        followers: list[tuple[str, int, int]] | None = None,
    ) -> None:
        """See `restore.restore`."""
        restore.restore(self, jobs, results, failed, now, followers)

    def restore_settings(self, paused: list[str], schedules: list[dict[str, Any]]) -> None:
        """See `restore.restore_settings`."""
        restore.restore_settings(self, paused, schedules)

    def snapshot(self) -> dict[str, Any]:
        """See `status_view.snapshot`."""
        return status_view.snapshot(self)

    # -- observation -----------------------------------------------------

    def _count_run(self, worker: WorkerInfo, job: Job, ok: bool, value: Any) -> int:
        """See `outcomes.count_run`."""
        return outcomes.count_run(self, worker, job, ok, value)

    def status(self, now: float, viewer: str | None = EVERYONE) -> dict[str, Any]:
        """See `status_view.status`."""
        return status_view.status(self, now, viewer)
