"""The Python client: `Client(address).submit(...)` and `.map(...)`.

Submits are coalesced: `submit` only queues the job and wakes the sender
thread, which sends everything queued by the time it runs in one frame. A
lone submit therefore goes out at once, and a burst of them goes out in a
few large frames, with no timer in between. A reader thread resolves the
futures as results arrive.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import uuid
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Iterable, Iterator

from protocol import (
    ROLE_CLIENT,
    Accepted,
    ConnectionLost,
    Error,
    Ping,
    Pong,
    ProtocolError,
    Results,
    SockpoolError,
    Submit,
    encode,
    error_value,
)
from protocol.defaults import CONNECT_TIMEOUT_S, MAP_WINDOW_CHUNKS, MAX_JOBS_PER_FRAME, MAX_MAP_CHUNK

from .connection import connect, new_hello

log = logging.getLogger("sockpool.client")


class JobFailed(SockpoolError):
    """A job ended in an error; carries what the remote side said.

    Attributes:
        remote_type: the remote exception's class name, e.g. "ZeroDivisionError",
            or a sockpool code such as "UnknownTask".
        remote_message: the remote exception's message.
        remote_traceback: the remote traceback text ("" when none).
    """

    def __init__(self, error: dict[str, Any]) -> None:
        self.remote_type = str(error.get("type", "Error"))
        self.remote_message = str(error.get("message", ""))
        self.remote_traceback = str(error.get("traceback", ""))
        self.items = error.get("items")
        super().__init__(f"{self.remote_type}: {self.remote_message}")

    def __str__(self) -> str:
        text = f"{self.remote_type}: {self.remote_message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


class Client:
    """A connection to a sockpool broker. Thread-safe; use as a context manager."""

    def __init__(self, address: str | None = None, *, name: str = "", connect_timeout_s: float = CONNECT_TIMEOUT_S):
        """Connect and shake hands.

        Raises:
            ConnectionLost: the broker cannot be reached.
            HandshakeRefused: the broker refused us.
        """
        self.session = uuid.uuid4().hex
        hello = new_hello(ROLE_CLIENT, name=name or f"client-{os.getpid()}", session=self.session)
        self._conn, welcome = connect(address, hello, connect_timeout_s)
        self.broker_name = welcome.broker
        self.max_frame_bytes = welcome.max_frame_bytes
        self.cluster_processes = welcome.processes
        self._lock = threading.Condition(threading.Lock())
        self._ids = itertools.count(1)
        self._batches = itertools.count(1)
        self._futures: dict[int, Future[Any]] = {}
        self._unsent: list[list[Any]] = []
        self._closed = False
        self._lost: BaseException | None = None
        self._reader = threading.Thread(target=self._read_loop, name="sockpool-results", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="sockpool-submit", daemon=True)
        self._reader.start()
        self._sender.start()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ---------------------------------------------------------

    def submit(self, task: str, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue one job; the future resolves to its result or raises JobFailed.

        Raises:
            ConnectionLost: the client is closed or lost its broker.
        """
        return self._submit(task, list(args), kwargs, False)

    def map(
        self,
        task: str,
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """Run `task(item)` for every item; yields the results in input order.

        Items travel in chunks of `chunksize` (by default sized from the
        input's length and the cluster's processes, like `Pool.map`). At
        most a fixed number of chunks are in flight, so an endless input
        streams in bounded memory.

        Raises (while iterating):
            JobFailed: an item failed (unless `return_exceptions`, which
                yields the JobFailed in that item's place instead).
            TimeoutError: `timeout` seconds passed before the next result.
        """
        if chunksize is None:
            chunksize = self._default_chunksize(iterable)
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        items = iter(iterable)
        window: deque[tuple[Future[Any], int]] = deque()

        def refill() -> None:
            while len(window) < MAP_WINDOW_CHUNKS:
                chunk = list(itertools.islice(items, chunksize))
                if not chunk:
                    return
                window.append((self._submit(task, chunk, {}, True), len(chunk)))

        refill()  # start now, not at the first next(), like Pool.map

        def chunks() -> Iterator[Iterable[Any]]:
            while window:
                future, size = window.popleft()
                refill()
                yield _chunk_values(future, size, timeout, return_exceptions)

        # chain walks each chunk's list in C: no Python frame per item.
        return itertools.chain.from_iterable(chunks())

    def close(self) -> None:
        """Close the connection; futures still pending fail with ConnectionLost."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._conn.close()
        self._reader.join(timeout=5)
        self._sender.join(timeout=5)

    # -- internals ----------------------------------------------------------

    def _default_chunksize(self, iterable: Iterable[Any]) -> int:
        if not hasattr(iterable, "__len__"):
            return 1
        processes = self.cluster_processes or os.cpu_count() or 1
        return max(1, min(MAX_MAP_CHUNK, math.ceil(len(iterable) / (4 * processes))))  # type: ignore[arg-type]

    def _submit(self, task: str, args: list[Any], kwargs: dict[str, Any], many: bool) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed or self._lost is not None:
                raise ConnectionLost(f"client is closed: {self._lost or 'closed by the caller'}")
            job_id = next(self._ids)
            self._futures[job_id] = future
            self._unsent.append([job_id, task, args, kwargs, many])
            if len(self._unsent) == 1:
                self._lock.notify()
        return future

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                while not self._unsent and not self._closed and self._lost is None:
                    self._lock.wait()
                if self._closed or self._lost is not None:
                    return
                jobs, self._unsent = self._unsent, []
            try:
                for start in range(0, len(jobs), MAX_JOBS_PER_FRAME):
                    self._send_jobs(jobs[start : start + MAX_JOBS_PER_FRAME])
            except ConnectionLost as exc:
                self._fail_all(exc)
                return

    def _send_jobs(self, jobs: list[list[Any]]) -> None:
        """Send jobs in frames under the broker's limit; fail what cannot fit."""
        try:
            data = encode(Submit(next(self._batches), jobs))
        except ProtocolError as exc:
            if len(jobs) == 1:
                self._fail(jobs[0][0], error_value("UnencodableArguments", str(exc)))
                return
            data = b""
        if data and len(data) - 4 <= self.max_frame_bytes:
            self._conn.send_bytes(data)
        elif len(jobs) > 1:
            half = len(jobs) // 2
            self._send_jobs(jobs[:half])
            self._send_jobs(jobs[half:])
        else:
            message = (
                f"job arguments take {len(data) - 4} bytes encoded, over the broker's "
                f"frame limit of {self.max_frame_bytes}"
            )
            self._fail(jobs[0][0], error_value("ArgumentsTooLarge", message))

    def _read_loop(self) -> None:
        try:
            while True:
                msg = self._conn.recv()
                if isinstance(msg, Results):
                    self._resolve(msg.results)
                elif isinstance(msg, Ping):
                    self._conn.send(Pong())
                elif isinstance(msg, Error):
                    log.error("broker says %s: %s", msg.code, msg.message)
                elif not isinstance(msg, (Accepted, Pong)):
                    raise ProtocolError(f"unexpected {msg.type!r} from the broker")
        except (ConnectionLost, ProtocolError) as exc:
            self._fail_all(exc)
        except BaseException as exc:  # top of a thread: never leave futures hanging
            self._fail_all(ConnectionLost(f"client reader failed: {exc!r}"))
            raise

    def _resolve(self, results: list[list[Any]]) -> None:
        with self._lock:
            futures = [(self._futures.pop(job_id, None), ok, value) for job_id, ok, value in results]
        for future, ok, value in futures:
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(JobFailed(value if isinstance(value, dict) else {"message": value}))

    def _fail(self, job_id: int, error: dict[str, Any]) -> None:
        self._resolve([[job_id, False, error]])

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            if self._closed:
                exc = ConnectionLost("client closed")
            self._lost = self._lost or exc
            futures, self._futures = self._futures, {}
            self._lock.notify_all()
        for future in futures.values():
            if not future.done():
                future.set_exception(ConnectionLost(str(exc)))


def _chunk_values(future: Future[Any], size: int, timeout: float | None, return_exceptions: bool) -> Iterable[Any]:
    """The values of one map chunk: its result list, or, if items failed,
    an iterator that yields up to the first failure and then raises it."""
    try:
        return future.result(timeout)  # type: ignore[no-any-return]
    except FutureTimeout:
        raise TimeoutError(f"no result within {timeout} s") from None
    except JobFailed as failed:
        if failed.items is None:  # the chunk failed as a whole: every item did
            if not return_exceptions:
                raise
            return [failed] * size
        return _item_values(failed.items, return_exceptions)


def _item_values(items: list[list[Any]], return_exceptions: bool) -> Iterator[Any]:
    for ok, value in items:
        if ok:
            yield value
        elif return_exceptions:
            yield JobFailed(value)
        else:
            raise JobFailed(value) from None
