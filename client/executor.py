"""`Executor("host:port")`: the cluster as a `concurrent.futures.Executor`.

Code written for `ProcessPoolExecutor` moves to the cluster by changing the
line that makes the executor. The functions must be top-level functions of
a module the workers load with `--tasks MODULE` (or the built-in tasks of
`worker.tasks`); a job names its function as `module:function` and the
worker runs its own copy of that module. Arguments and results travel as
msgpack values, so a tuple comes back as a list.

What differs from a process pool, because the work is remote:
- A failed call raises `JobFailed` (with the remote type, message and
  traceback), not the original exception object; for a built-in exception
  type it is an instance of that type too (`except KeyError:` works).
- `Future.cancel()` succeeds while the result has not arrived, and the
  result is then dropped; the job itself may still run on a worker.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from concurrent.futures import Executor as _Executor
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterable, Iterator

from .api import Client, _chunk_values

# The module whose functions workers serve under their bare names.
BUILTIN_MODULE = "sockpool.worker.tasks"


def task_name(fn: Callable[..., Any]) -> str:
    """The name a worker serves `fn` under: `module:function`.

    Raises:
        TypeError: `fn` is not a public top-level function of an importable
            module (a lambda, a nested function, a method, a partial, a
            builtin, or a function of `__main__`).
    """
    if not inspect.isfunction(fn):
        raise TypeError(
            f"{fn!r} is not a plain function: the cluster runs top-level functions "
            "of modules the workers load with --tasks MODULE"
        )
    module, qualname = fn.__module__, fn.__qualname__
    if qualname == "<lambda>" or "." in qualname:
        raise TypeError(
            f"{module}.{qualname} is not a top-level function: a worker can only run "
            "functions defined at the top level of a module it loads with --tasks MODULE"
        )
    if module == "__main__":
        raise TypeError(
            f"{qualname} is defined in __main__, which workers cannot import: move it "
            "to a module and start the workers with --tasks MODULE"
        )
    if qualname.startswith("_"):
        raise TypeError(f"{module}:{qualname} is private: workers serve only public functions")
    return qualname if module == BUILTIN_MODULE else f"{module}:{qualname}"


class Executor(_Executor):
    """Runs calls on the cluster behind the broker at `address`."""

    def __init__(self, address: str | None = None, **client_options: Any) -> None:
        """Connect to the broker. `client_options` go to `Client`: `retries=`,
        `timeout=`, `queue=` and `priority=` for every call, `secret_file=`,
        `tls_ca=`, `name=`...

        Raises:
            ConnectionLost: the broker cannot be reached.
            HandshakeRefused: the broker refused us.
            ValueError: a bad option, or a secret or CA file that cannot be used.
        """
        self._client = Client(address, **client_options)
        # Reentrant: a future already done runs its callback (_forget) at once.
        self._lock = threading.RLock()
        self._pending: set[Future[Any]] = set()
        self._shutdown = False

    @property
    def client(self) -> Client:
        """The underlying client, for `status()` or `map` with a task name."""
        return self._client

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run `fn(*args, **kwargs)` on a worker.

        Raises:
            TypeError: `fn` cannot run on a worker (see `task_name`).
            RuntimeError: the executor was shut down.
            ConnectionLost: the broker went away.
        """
        task = task_name(fn)
        self._check_open()
        return self._track(self._client._submit(task, list(args), kwargs, False, self._client.options))

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[Any]:
        """Like `ProcessPoolExecutor.map`: every call is submitted now, the
        results come in input order, and `timeout` counts from this call.
        With one iterable, items travel `chunksize` to a job (a job's
        retries and timeout then apply to its chunk as a whole); with
        several, each call is its own job (frames are batched either way).

        Raises:
            TypeError, RuntimeError, ConnectionLost: as `submit`.
            ValueError: chunksize is below 1.
        Raises while iterating:
            JobFailed: a call failed.
            TimeoutError: the results did not all arrive within `timeout`.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        task = task_name(fn)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._check_open()
        # (future, calls in its chunk), or (future, 0) for a single call.
        chunks: list[tuple[Future[Any], int]] = []
        if len(iterables) == 1:
            items = iter(iterables[0])
            while chunk := list(itertools.islice(items, chunksize)):
                chunks.append((self._track(self._client._submit(task, chunk, {}, True, self._client.options)), len(chunk)))
        else:
            for call_args in zip(*iterables):
                chunks.append((self._track(self._client._submit(task, list(call_args), {}, False, self._client.options)), 0))
        return self._results(chunks, deadline)

    def _results(self, chunks: list[tuple[Future[Any], int]], deadline: float | None) -> Iterator[Any]:
        # A generator: what the caller stops reading is cancelled, as
        # ProcessPoolExecutor.map does when its iterator is closed.
        chunks.reverse()
        try:
            while chunks:
                future, size = chunks[-1]
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if size:
                    yield from _chunk_values(future, size, remaining, False)
                else:
                    try:
                        yield future.result(remaining)
                    except FutureTimeout:
                        raise TimeoutError("the map's results did not arrive in time") from None
                chunks.pop()
        finally:
            for future, _ in chunks:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; optionally cancel what has no result yet; close
        the connection once every remaining future is done (at once if not
        `wait`, in a background thread)."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            self._close_when_done(pending)
        else:
            threading.Thread(target=self._close_when_done, args=(pending,), name="executor-shutdown", daemon=True).start()

    def _close_when_done(self, futures: list[Future[Any]]) -> None:
        for future in futures:
            try:
                future.exception()  # waits; the outcome belongs to the caller
            except BaseException:
                pass  # cancelled
        self._client.close()

    def _check_open(self) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")

    def _track(self, future: Future[Any]) -> Future[Any]:
        """Remember a future until it is done, for `shutdown`."""
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
