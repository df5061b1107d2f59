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
"""

from __future__ import annotations

import inspect
import threading
import weakref
from concurrent.futures import Future
from typing import Any, Callable


class JobFuture(Future[Any]):
    def cancel(self) -> bool:
        """Cancel a job that no worker has taken yet; False once one has.

        The result is dropped when it comes; the broker may still run the
        job (it is not told).
        """
        if not super().cancel():
            return False
        try:
            self.set_running_or_notify_cancel()
        except RuntimeError:
            pass  # notified already
        return True

    def mark_running(self) -> None:
        """A worker took the job: RUNNING, unless it is cancelled or done."""
        try:
            self.set_running_or_notify_cancel()
        except RuntimeError:
            pass  # finished (the result came first) or already running


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
