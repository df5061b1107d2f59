"""The Python client: `Client(address).submit(...)` and `.map(...)`.

The client turns calls into job entries and futures; its `BrokerLink`
(client/link.py) batches them onto the wire, keeps them until the broker
confirms they are durable, and reconnects when the broker goes away.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, InvalidStateError
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Iterator

from sockpool.protocol import ROLE_CLIENT, ROLE_OPERATOR, ConnectionLost
from sockpool.protocol.control import E_CANCELLED, OUTCOME_CANCELLED, OUTCOME_STOPPED, Cancel, CancelReply
from sockpool.protocol.defaults import (
    CONNECT_TIMEOUT_S,
    MAP_WINDOW_CHUNKS,
    MAX_MAP_CHUNK,
    RECONNECT_TIMEOUT_S,
    SECRET_ENV,
    TLS_CA_ENV,
)
from sockpool.protocol.messages import RESULT_DETACHED, RESULT_NONE

from sockpool.net.credentials import Credentials
from .entries import chunk_values, job_entry, job_options, result_entry
from .errors import JobFailed
from .futures import BUSY, JobFuture, MapResults, WeakCallback, mark_cancelled
from .link import BrokerLink
from .requests import BrokerRequests

log = logging.getLogger("sockpool.client")


class Client(BrokerRequests):
    """A connection to a sockpool broker. Thread-safe; use as a context manager.

    Jobs carry options: `retries` (further attempts after a failure, with
    exponential backoff), `timeout` (seconds; the pool process running
    an over-time job is killed and replaced), `queue` (the named queue;
    only workers listening on it run the job), `priority` (an integer,
    higher runs first), `delay` (seconds or a timedelta before it may run)
    and `at` (an aware datetime, or Unix time, before which it may not
    run). Set defaults here, or per call with `with_options(...)`, which
    also takes a unique `key` and a concurrency `limit_key` (README:
    Control over jobs).

    `future.cancel()` withdraws a job that has not started (it never runs);
    `client.cancel(future)` also stops one that is running.

    If the broker goes away, the client reconnects for up to
    `reconnect_timeout_s` and keeps waiting for its results.

    With `notify_started`, the broker tells the client when a worker takes
    each job, so that `future.running()` turns true and `cancel()` fails
    from then on (one small message per dispatch round; off by default,
    as bulk submitters have no use for it).

    A client dropped without `close()` closes itself once its pending
    futures are resolved (at garbage collection).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        name: str = "",
        retries: int = 0,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int = 0,
        session: str | None = None,
        auto_ack: bool = True,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
        secret_file: str | None = None,
        tls_ca: str | None = None,
        credentials: Credentials | None = None,
        operator: bool = False,
        on_notice: Callable[[str], None] | None = None,
        notify_started: bool = False,
    ):
        """Connect and shake hands. `session` re-attaches to an earlier
        session (see `collect`); by default each client is a new session.

        The secret comes from `secret_file`, else $SOCKPOOL_SECRET_FILE; TLS
        is used when `tls_ca` (else $SOCKPOOL_TLS_CA) names the CA that
        signed the broker's certificate. `credentials` overrides both.

        `operator` connects in the operator role, with the operator's
        secret: `failed_jobs` then lists every session's failures, not only
        this client's (see SECURITY.md).

        `on_notice(text)` hears what the broker says about our jobs that is
        not an error, such as jobs waiting for a worker that serves their
        task (on the reader thread: return quickly); by default it is
        logged as a warning.

        Raises:
            ConnectionLost: the broker cannot be reached.
            HandshakeRefused: the broker refused us, or failed to prove it
                knows our secret, or TLS is on at one end only.
            ValueError: a secret or CA file cannot be used.
        """
        if credentials is None:
            credentials = Credentials.from_files(
                secret_file or os.environ.get(SECRET_ENV) or None, tls_ca or os.environ.get(TLS_CA_ENV) or None
            )
        self.options = job_options(retries, timeout, queue=queue, priority=priority)
        # An Executor's client: interpreter exit waits for its pending futures.
        self.wait_at_exit = False
        self.auto_ack = auto_ack
        self._lock = threading.Condition(threading.Lock())
        self._ids = itertools.count(1)
        self._futures: dict[int, Any] = {}  # JobFuture, or aio.py's slot
        self._adopted: dict[int, list[Any]] = {}  # results of an attached session
        self._unwanted: set[int] = set()  # fire-and-forget jobs not yet accepted
        self._lost: BaseException | None = None
        # What a cancelled future calls; weakly, so futures a caller keeps
        # do not keep a dropped client alive.
        self._withdraw_weakly = WeakCallback(self._withdraw)
        self._link = BrokerLink(
            address, session or secrets.token_hex(16), name or f"client-{os.getpid()}",
            self._resolve, self._fail_all, connect_timeout_s, reconnect_timeout_s, credentials,
            ROLE_OPERATOR if operator else ROLE_CLIENT, on_notice, self._accepted,
            on_started=self._mark_started if notify_started else None,
        )
        self.session = self._link.welcome.session or self._link.session
        # Dropped without close(): the link's threads hold us only weakly.
        self._finalizer = weakref.finalize(self, self._link.close)
        self._link.start()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cluster_processes(self) -> int:
        """Processes of the workers connected when we last (re)connected."""
        return self._link.welcome.processes

    @property
    def max_frame_bytes(self) -> int:
        return self._link.welcome.max_frame_bytes

    # -- public API ---------------------------------------------------------

    def submit(self, task: str, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue one job; the future resolves to its result or raises JobFailed.

        Blocks while MAX_PENDING_JOBS (protocol/defaults.py) jobs are still
        waiting for the broker to accept them, so a loop of submits runs at
        the broker's pace in bounded memory.

        Raises:
            ConnectionLost: the client is closed or gave up on its broker.
        """
        return self._submit(task, list(args), kwargs, False, self.options)

    def with_options(
        self, *, retries: int | None = None, timeout: float | None = None, queue: str | None = None,
        priority: int | None = None, delay: float | timedelta | None = None, at: datetime | float | None = None,
        detached: bool = False, fire_and_forget: bool = False, key: str | None = None,
        limit_key: str | None = None, limit: int | None = None,
    ) -> JobOptions:
        """`submit` and `map` with other options than the client's (see the
        class for retries, timeout, queue, priority, delay and at).

        `key`: a unique key. While a job with this key is queued, running,
        or has a result its submitter has not collected, a submit with the
        same key (from any client) makes no new job: its future gets that
        job's outcome. Not for `map`, whose chunks are many jobs.
        `limit_key` (and `limit`, its capacity unless the broker sets one
        with `--limit`): at most that many jobs with this key run at once,
        across the cluster. These are job options, not arguments of
        `submit`, because `submit`'s keyword arguments are the task's.

        `detached`: the broker keeps the results even after this client is
        gone for good, until a client attaching to this session (`session=`,
        `collect`) acknowledges them or their TTL passes. Without it, the
        results of a client gone longer than the broker's session grace
        (5 minutes by default) are dropped: nobody can collect them.

        `fire_and_forget` (`submit` only): the broker keeps no result at
        all, only a record of a failure (`broker failed`); the future
        resolves to None once the job is on the broker's disk.

        Raises:
            ValueError: an option out of its range (see `job_options`).
        """
        if detached and fire_and_forget:
            raise ValueError("a job is either detached or fire-and-forget")
        mode = RESULT_DETACHED if detached else RESULT_NONE if fire_and_forget else None
        base = self.options
        return JobOptions(self, job_options(
            base.get("retries", 0) if retries is None else retries,
            base.get("timeout") if timeout is None else timeout,
            mode, key=key, limit_key=limit_key, limit=limit,
            queue=base.get("queue") if queue is None else queue,
            priority=base.get("priority", 0) if priority is None else priority,
            delay=delay, at=at,
        ))

    def map(
        self,
        task: str,
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> MapResults:
        """Run `task(item)` for every item; yields the results in input order.

        Items travel in chunks of `chunksize` (by default sized from the
        input's length and the cluster's processes, like `Pool.map`; one
        item per job when jobs have a timeout or retries, so that those
        apply to each item). At most a fixed number of chunks are in
        flight, so an endless input streams in bounded memory.
        `.cancel()` on what it returns cancels the map's unfinished chunks.

        Raises (while iterating):
            JobFailed: an item failed (unless `return_exceptions`, which
                yields the JobFailed in that item's place instead).
            TimeoutError: `timeout` seconds passed before the next result.
        """
        return self._map(task, iterable, chunksize, timeout, return_exceptions, self.options)

    def collect(self, timeout: float | None = None) -> list[tuple[int, bool, Any]]:
        """For a client created with `session=`: wait for every result the
        broker holds for that session; (job id, ok, value) in submission order.

        The broker holds them for a session gone longer than its session
        grace (5 minutes by default) only if the jobs were submitted
        detached (`with_options(detached=True)`, `submit --detach`).

        Raises:
            TimeoutError: not all results arrived in time.
            ConnectionLost: the broker was lost for good.
        """
        expected = self._link.welcome.jobs
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while len(self._adopted) < expected:
                if self._lost is not None:
                    raise ConnectionLost(str(self._lost))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{len(self._adopted)} of {expected} results within {timeout} s")
                self._lock.wait(left)
            return [(cid, entry[1], entry[2]) for cid, entry in sorted(self._adopted.items())]

    def wait_accepted(self, timeout: float | None = None) -> bool:
        """Wait until the broker has durably accepted every job submitted so far."""
        return self._link.wait_accepted(timeout)

    @property
    def refused(self) -> int:
        """Jobs the broker refused at submit so far (unknown task, too large,
        broker full): their futures fail at once, each with the reason."""
        return self._link.refused

    def ack_all(self) -> None:
        """Let the broker forget every result of this session it has sent."""
        self._link.ack(None)

    def cancel(self, target: Future[Any] | MapResults | Iterable[Future[Any]], timeout: float = 10.0) -> bool:
        """Cancel jobs, stopping those that are running: the worker kills
        the pool process running one and replaces it. `target` is a future
        of this client, a map's results, or futures. Waits for the broker's
        decision; True if any job was cancelled or stopped (its future is
        then cancelled), False if every one had finished first (its future
        has, or is about to have, its result).

        Raises:
            ConnectionLost: no answer from the broker.
        """
        if isinstance(target, MapResults):
            return target.cancel(timeout)
        futures = [target] if isinstance(target, Future) else list(target)
        mine = {f.job_id: f for f in futures
                if isinstance(f, JobFuture) and f._withdraw is self._withdraw_weakly and not f.done()}
        if not mine:
            return False
        withdrawn = self._link.withdraw(list(mine))
        for job_id in withdrawn:
            mark_cancelled(mine.pop(job_id))
        self._forget(withdrawn)
        if not mine:
            return True
        reply = self._link.request(Cancel(ids=list(mine), stop=True), timeout)
        assert isinstance(reply, CancelReply)
        hit = bool(withdrawn)
        for job_id, outcome in reply.outcomes:
            if outcome in (OUTCOME_CANCELLED, OUTCOME_STOPPED) and job_id in mine:
                mark_cancelled(mine[job_id])
                hit = True
        return hit

    def close(self) -> None:
        """Close the connection; futures still pending fail with ConnectionLost."""
        self._finalizer()
        self._fail_all(ConnectionLost("client closed"))

    def pending(self) -> list[Future[Any]]:
        """The futures whose results have not arrived yet (cancelled ones too)."""
        with self._lock:
            return list(self._futures.values())

    # -- internals ----------------------------------------------------------

    def _map(
        self, task: str, iterable: Iterable[Any], chunksize: int | None, timeout: float | None,
        return_exceptions: bool, options: dict[str, Any],
    ) -> MapResults:
        if options.get("result") == RESULT_NONE:
            raise ValueError("map yields results: fire-and-forget jobs have none (use submit)")
        if chunksize is None:
            per_item = "retries" in options or "timeout" in options
            chunksize = 1 if per_item else self._default_chunksize(iterable)
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        if options.get("key") is not None:
            raise ValueError("a unique key names one job; a map is many jobs (submit each with its own key)")
        return MapResults(
            self, lambda chunk: self._submit(task, chunk, {}, True, options), iter(iterable), chunksize,
            MAP_WINDOW_CHUNKS, lambda future, size: chunk_values(future, size, timeout, return_exceptions),
        )

    def _default_chunksize(self, iterable: Iterable[Any]) -> int:
        if not hasattr(iterable, "__len__"):
            return 1
        processes = self.cluster_processes or os.cpu_count() or 1
        return max(1, min(MAX_MAP_CHUNK, math.ceil(len(iterable) / (4 * processes))))  # type: ignore[arg-type]

    def _submit(
        self, task: str, args: list[Any], kwargs: dict[str, Any], many: bool, options: dict[str, Any],
        future: JobFuture | None = None,
    ) -> JobFuture:
        """Queue one job entry; resolves `future` (a new one by default).

        Raises:
            ConnectionLost: the client is closed or gave up on its broker.
        """
        future = JobFuture() if future is None else future
        with self._lock:
            if self._lost is not None:
                raise ConnectionLost(f"client is closed: {self._lost}")
            job_id = next(self._ids)
            future.job_id = job_id
            future._withdraw = self._withdraw_weakly
            lone = not self._futures  # no other job of ours in flight: send it now
            if lone:
                BUSY.add(self)
            self._futures[job_id] = future
            if options.get("result") == RESULT_NONE:
                self._unwanted.add(job_id)
        entry = job_entry(job_id, task, args, kwargs, many, options)
        try:
            self._link.queue(entry, lone)  # blocks while too many jobs await the broker's accept
        except ConnectionLost:
            self._forget([job_id])
            raise
        return future

    def _submit_many(self, calls: list[tuple[str, list[Any], dict[str, Any], bool, dict[str, Any], Any]]) -> None:
        """Queue many job entries at once, for the event loop (aio.py): each
        (task, args, kwargs, many, options, future), where the future is
        anything with set_result, set_exception and mark_running. One lock
        round for them all, no waiting for room, no sending on this thread.

        Raises:
            ConnectionLost: the client is closed or gave up on its broker.
        """
        with self._lock:
            if self._lost is not None:
                raise ConnectionLost(f"client is closed: {self._lost}")
            if not self._futures:
                BUSY.add(self)
            ids = [next(self._ids) for _ in calls]
            for job_id, call in zip(ids, calls):
                self._futures[job_id] = call[5]
                if call[4].get("result") == RESULT_NONE:
                    self._unwanted.add(job_id)
        entries = [job_entry(job_id, *call[:5]) for job_id, call in zip(ids, calls)]
        try:
            self._link.queue_many(entries)
        except ConnectionLost:
            self._forget(ids)
            raise

    def _forget(self, ids: list[int]) -> None:
        with self._lock:
            for job_id in ids:
                self._futures.pop(job_id, None)
            if not self._futures:
                BUSY.discard(self)

    def _mark_started(self, ids: list[int]) -> None:
        with self._lock:
            futures = [self._futures.get(job_id) for job_id in ids]
        for future in futures:
            if future is not None:
                future.mark_running()

    def _resolve(self, results: list[list[Any]]) -> None:
        results = [result_entry(entry) for entry in results]
        with self._lock:
            futures = [(self._futures.pop(job_id, None), job_id, ok, value) for job_id, ok, value in results]
            for future, job_id, ok, value in futures:
                if future is None and job_id not in self._adopted:
                    self._adopted[job_id] = [job_id, ok, value]
            idle = not self._futures
            if idle:
                BUSY.discard(self)  # nothing in flight: we may be collected
            self._lock.notify_all()
        ids = [entry[0] for entry in results]
        if self.auto_ack and idle:
            # Nothing else in flight (a lone job): the ack waits for the
            # next submit, to travel in the same write (client/acks.py);
            # held before the futures are resolved, so that its frame is
            # packed before the caller wakes to submit again.
            self._link.ack(ids, later=True)
        for future, _, ok, value in futures:
            if future is None:
                continue  # a result we already have, sent again after a reconnect
            # The caller may have cancelled the future; the job ran anyway,
            # and its result has nowhere to go.
            try:
                if not ok and isinstance(value, dict) and value.get("type") == E_CANCELLED:
                    mark_cancelled(future)
                elif ok:
                    future.set_result(value)
                else:
                    future.set_exception(JobFailed(value if isinstance(value, dict) else {"message": value}))
            except InvalidStateError:
                pass
        if self.auto_ack and not idle:
            self._link.ack(ids)

    def _accepted(self, jobs: list[list[Any]]) -> None:
        """On the reader thread: a batch is on the broker's disk. A
        fire-and-forget job is done for us then (a refusal came before)."""
        if not self._unwanted:
            return
        with self._lock:
            done = [self._futures.pop(job[0], None) for job in jobs if job[0] in self._unwanted]
            self._unwanted.difference_update(job[0] for job in jobs)
            if not self._futures:
                BUSY.discard(self)
        for future in done:
            if future is not None:
                try:
                    future.set_result(None)
                except InvalidStateError:
                    pass

    def _withdraw(self, job_id: int) -> None:
        """`future.cancel()` succeeded: take the job back (see futures.py)."""
        if self._link.withdraw([job_id], ask_broker=True):
            self._forget([job_id])

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            self._lost = self._lost or exc
            futures, self._futures = self._futures, {}
            BUSY.discard(self)
            self._lock.notify_all()
        for future in futures.values():
            try:
                future.set_exception(ConnectionLost(str(exc)))
            except InvalidStateError:
                pass  # done or cancelled meanwhile


class JobOptions:
    """`client.with_options(...)`: submit and map with these job options."""

    def __init__(self, client: Client, options: dict[str, Any]) -> None:
        self._client = client
        self.options = options

    def submit(self, task: str, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._client._submit(task, list(args), kwargs, False, self.options)

    def map(
        self, task: str, iterable: Iterable[Any], *, chunksize: int | None = None,
        timeout: float | None = None, return_exceptions: bool = False,
    ) -> Iterator[Any]:
        return self._client._map(task, iterable, chunksize, timeout, return_exceptions, self.options)


