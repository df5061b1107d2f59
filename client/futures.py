"""The future a job's caller holds, and what keeps a busy client alive
(and lets an idle one go).

`JobFuture` is a `concurrent.futures.Future` whose successful `cancel()`
notifies waiters at once: `wait()` and `as_completed()` count a future as
done only once it is CANCELLED_AND_NOTIFIED, a step a local pool takes
when it dequeues the call; a remote job may never come back to take it.
A future becomes RUNNING when the broker says a worker took its job
(for clients that asked: `notify_started`), or, for an Executor with
`max_workers`, when it takes one of those places; `cancel()` then fails,
as it does for a call a ProcessPoolExecutor has handed to its processes.

Cancelling also withdraws the job: dropped in the client if it was never
sent, else the broker removes it if it is still waiting, so it never runs.
A job a worker already holds is left to finish and its result is dropped,
as the stdlib leaves a running call alone. Stopping a running job is a
different request with a different answer, so it has its own name:
`Client.cancel(future)` asks the broker, waits for its decision, and
returns whether the job was cancelled or stopped (True: the future is
cancelled) or had already finished (False). The broker decides under one
lock: one outcome. `MapResults` is what `Client.map` returns, with a
`cancel()` for the map's unfinished chunks.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import weakref
from collections import deque
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from .api import Client


class JobCancelled(CancelledError):
    """The job was stopped after its future was already marked running."""


class JobFuture(Future[Any]):
    # Set by the client that submitted it: the client's id for the job (as
    # in `collect`) and what to call to withdraw it once cancelled.
    job_id: int = 0
    _withdraw: Callable[[int], None] | None = None

    def cancel(self) -> bool:
        """Cancel a job that no worker has taken yet; False once one has.

        The job is withdrawn: the broker removes it if it still waits, so it
        never runs (a job already leased to a worker runs on, and its
        result is dropped). `Client.cancel(future)` stops a running one.
        """
        if not super().cancel():
            return False
        try:
            self.set_running_or_notify_cancel()
        except RuntimeError:
            pass  # notified already
        if self._withdraw is not None:
            self._withdraw(self.job_id)
        return True

    def cancel_here(self) -> bool:
        """The broker cancelled or stopped the job: cancel the future
        without asking the broker again."""
        if not Future.cancel(self):
            return False
        try:
            self.set_running_or_notify_cancel()
        except RuntimeError:
            pass
        return True

    def mark_running(self) -> None:
        """A worker took the job: RUNNING, unless it is cancelled or done."""
        try:
            self.set_running_or_notify_cancel()
        except RuntimeError:
            pass  # finished (the result came first) or already running


def mark_cancelled(future: Any) -> None:
    """The broker cancelled or stopped the job: end its future cancelled
    (without asking the broker again). A future of the event loop's
    (aio.py) only has set_result and set_exception: it gets the error."""
    try:
        if isinstance(future, JobFuture):
            cancelled = future.cancel_here()
        elif isinstance(future, Future):
            cancelled = Future.cancel(future)
        else:
            future.set_exception(JobCancelled("the job was cancelled"))
            return
        if not cancelled and not future.done():
            # Running (the stdlib will not cancel that): fail it with a
            # CancelledError, which is what result() raises for a cancel.
            future.set_exception(JobCancelled("the job was stopped"))
    except InvalidStateError:
        pass  # its result won the race


class MapResults(Iterator[Any]):
    """What `Client.map` returns: iterate it for the results in order;
    `cancel()` stops the map: no more chunks are submitted, and those not
    finished are cancelled (queued ones removed, running ones stopped)."""

    def __init__(
        self, client: Client, submit_chunk: Callable[[list[Any]], Future[Any]], items: Iterator[Any],
        chunksize: int, window_chunks: int, values: Callable[[Future[Any], int], Iterable[Any]],
    ) -> None:
        self._client = client
        self._submit_chunk = submit_chunk
        self._items = items
        self._chunksize = chunksize
        self._window_chunks = window_chunks
        self._values = values
        self._window: deque[tuple[Future[Any], int]] = deque()
        self._current: tuple[Future[Any], int] | None = None  # the chunk being read
        self._stopped = False
        self._refill()  # start now, not at the first next(), like Pool.map
        # chain walks each chunk's list in C: no Python frame per item.
        self._chain = itertools.chain.from_iterable(self._chunks())

    def __iter__(self) -> Iterator[Any]:
        return self._chain

    def __next__(self) -> Any:
        return next(self._chain)

    def cancel(self, timeout: float = 10.0) -> bool:
        """Cancel every chunk not finished; True if any was. Iterating
        afterwards raises CancelledError at the first cancelled chunk.

        Raises:
            ConnectionLost: no answer from the broker.
        """
        self._stopped = True
        current = [self._current[0]] if self._current is not None else []
        return self._client.cancel(current + [future for future, _ in self._window], timeout)

    def _refill(self) -> None:
        while not self._stopped and len(self._window) < self._window_chunks:
            chunk = list(itertools.islice(self._items, self._chunksize))
            if not chunk:
                return
            self._window.append((self._submit_chunk(chunk), len(chunk)))

    def _chunks(self) -> Iterator[Iterable[Any]]:
        while self._window:
            self._current = self._window.popleft()
            self._refill()
            yield self._values(*self._current)
        self._current = None


class BusyClients:
    """Clients with jobs in flight, held strongly: a client dropped while
    its futures are pending stays connected until they resolve (as a
    ThreadPoolExecutor dropped with work queued finishes it); one dropped
    with nothing pending is collected, and its finalizer closes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: set[Any] = set()

    def add(self, client: Any) -> None:
        with self._lock:
            self._clients.add(client)

    def discard(self, client: Any) -> None:
        with self._lock:
            self._clients.discard(client)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self._clients)


BUSY = BusyClients()


class WeakCallback:
    """A callback for the link's threads that does not keep its owner alive:
    a bound method (the client's own) is held weakly, or a client dropped
    without `close()` would never be collected and its threads would run
    forever. Any other callable (a user's `on_notice`) is held as it is."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self._method = weakref.WeakMethod(fn) if inspect.ismethod(fn) else None
        self._fn = None if self._method is not None else fn

    def __call__(self, *args: Any) -> None:
        fn = self._fn if self._method is None else self._method()
        if fn is not None:
            fn(*args)
