"""`Executor("host:port")`: the cluster as a `concurrent.futures.Executor`.

Code written for `ProcessPoolExecutor` moves to the cluster by changing the
line that makes the executor. The functions must be top-level functions of
a module the workers load with `--tasks MODULE` (or the built-in tasks of
`worker.tasks`); a job names its function as `module:function` and the
worker runs its own copy of that module. Arguments and results travel as
msgpack values plus tuples and ints of any size (protocol/values.py).

Lifecycle, as the stdlib's executors: at interpreter exit the program
waits for every executor's pending futures (a script may submit and end
without `shutdown()`), and `submit` after that has begun raises
RuntimeError; an executor dropped without `shutdown()` closes its
connection once its futures are resolved. Futures turn RUNNING when a
worker takes their job, and can no longer be cancelled then.

What differs from a process pool, because the work is remote, is listed
in the README ("Moving from ProcessPoolExecutor").
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Executor as _Executor
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterable, Iterator

from sockpool.protocol.values import wire_args

from .api import Client
from .entries import chunk_values
from .futures import BUSY, JobFuture

# The module whose functions workers serve under their bare names.
BUILTIN_MODULE = "sockpool.worker.tasks"

# Executors still open, for the wait at interpreter exit.
_open_executors: weakref.WeakSet[Executor] = weakref.WeakSet()
_interpreter_exiting = False


def _python_exit() -> None:
    """At interpreter exit, before daemon threads stop: let every open
    executor's pending futures resolve, then close it (ProcessPoolExecutor
    does the same). Registered with threading, as concurrent.futures does,
    so that it runs before atexit handlers, which may no longer submit."""
    global _interpreter_exiting
    _interpreter_exiting = True
    for executor in list(_open_executors):
        executor.shutdown(wait=True)
    # An executor dropped unshut with calls pending is gone, but its client
    # is kept alive by them (futures.BUSY): wait for those too.
    for client in BUSY.snapshot():
        if getattr(client, "wait_at_exit", False):
            _close_when_done(client, client.pending())


try:
    threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
except RuntimeError:  # imported while the interpreter is already exiting
    _interpreter_exiting = True


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

    def __init__(
        self,
        address: str | None = None,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        **client_options: Any,
    ) -> None:
        """Connect to the broker. `max_workers`, as a pool's size, bounds
        how many of this executor's jobs (calls, or map chunks) are at the
        cluster at once; the rest wait here, pending and cancellable, and
        go as earlier ones finish. None: no bound (the cluster's workers
        decide). `initializer(*initargs)`, a task function like any other,
        runs once in each pool process before the first of this
        executor's jobs there; if it fails, so do those jobs (a JobFailed
        that is a BrokenProcessPool). `client_options` go to `Client`:
        `retries=`, `timeout=`, `queue=` and `priority=` for every call, `secret_file=`,
        `tls_ca=`, `name=`...

        Raises:
            ConnectionLost: the broker cannot be reached.
            HandshakeRefused: the broker refused us.
            ValueError: a bad option (max_workers below 1), or a secret or
                CA file that cannot be used.
            TypeError: an initializer that cannot run on a worker (see `task_name`).
        """
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        init = None if initializer is None else [task_name(initializer), wire_args(list(initargs))]
        client_options.setdefault("notify_started", True)  # for Future.running() and cancel()
        self._client = Client(address, **client_options)
        self._client.wait_at_exit = True  # see _python_exit
        self._options = self._client.options if init is None else {**self._client.options, "init": init}
        self._lock = threading.Lock()
        self._shutdown = False
        self._max_workers = max_workers
        self._in_flight = 0
        # Jobs past max_workers: (future, task, args, kwargs, many).
        self._backlog: deque[tuple[JobFuture, str, list[Any], dict[str, Any], bool]] = deque()
        _open_executors.add(self)

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
        return self._send(task, list(args), kwargs, False)

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
                chunks.append((self._send(task, chunk, {}, True), len(chunk)))
        else:
            for call_args in zip(*iterables):
                chunks.append((self._send(task, list(call_args), {}, False), 0))
        return _results(chunks, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with `cancel_futures`, cancel every future no
        worker has taken yet; close the connection once every remaining
        future is done (at once if not `wait`, in a background thread)."""
        with self._lock:
            self._shutdown = True
            pending: list[Future[Any]] = [entry[0] for entry in self._backlog]
        _open_executors.discard(self)
        pending = self._client.pending() + pending
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            _close_when_done(self._client, pending)
        else:
            threading.Thread(
                target=_close_when_done, args=(self._client, pending), name="executor-shutdown", daemon=True
            ).start()

    def _send(self, task: str, args: list[Any], kwargs: dict[str, Any], many: bool) -> Future[Any]:
        if self._max_workers is None:
            return self._client._submit(task, args, kwargs, many, self._options)
        future = JobFuture()
        with self._lock:
            if self._in_flight >= self._max_workers:
                self._backlog.append((future, task, args, kwargs, many))
                return future
            self._in_flight += 1
        self._launch(future, task, args, kwargs, many)
        return future

    def _launch(self, future: JobFuture, task: str, args: list[Any], kwargs: dict[str, Any], many: bool) -> None:
        if not self._try_launch(future, task, args, kwargs, many):
            self._next(future)

    def _try_launch(self, future: JobFuture, task: str, args: list[Any], kwargs: dict[str, Any], many: bool) -> bool:
        """Hand a job to the cluster, taking one of the max_workers places:
        like a call a ProcessPoolExecutor moves into its pool's queue, it
        is RUNNING from now on and cannot be cancelled (it will run). When
        it is done, the next one goes. False if it was cancelled first, or
        the client refused it (the future then holds why)."""
        try:
            if not future.set_running_or_notify_cancel():
                return False  # cancelled while it waited here
        except RuntimeError:
            return False  # cancelled, and waiters already told
        try:
            self._client._submit(task, args, kwargs, many, self._options, future=future)
        except Exception as exc:  # ConnectionLost: the client is closed or gave up
            future.set_exception(exc)
            return False
        future.add_done_callback(self._next)
        return True

    def _next(self, _: Future[Any]) -> None:
        """One of ours is done (on the client's reader thread): send the
        next waiting job that was not cancelled meanwhile. A loop, not a
        chain of calls: a closed client refuses every waiting job at once."""
        while True:
            with self._lock:
                while self._backlog and self._backlog[0][0].cancelled():
                    self._backlog.popleft()
                if not self._backlog:
                    self._in_flight -= 1
                    return
                entry = self._backlog.popleft()
            if self._try_launch(*entry):
                return

    def _check_open(self) -> None:
        # Interpreter exit first: by then _python_exit has shut us down too.
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")


def _close_when_done(client: Client, futures: list[Future[Any]]) -> None:
    for future in futures:
        try:
            future.exception()  # waits; the outcome belongs to the caller
        except BaseException:
            pass  # cancelled
    client.close()


def _results(chunks: list[tuple[Future[Any], int]], deadline: float | None) -> Iterator[Any]:
    """The results of a map in input order. A generator of its own (not a
    method), so that an iterator kept does not keep the executor alive."""
    # What the caller stops reading is cancelled, as ProcessPoolExecutor.map
    # does when its iterator is closed.
    chunks.reverse()
    try:
        while chunks:
            future, size = chunks[-1]
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if size:
                yield from chunk_values(future, size, remaining, False)
            else:
                try:
                    yield future.result(remaining)
                except FutureTimeout:
                    raise TimeoutError("the map's results did not arrive in time") from None
            chunks.pop()
    finally:
        for future, _ in chunks:
            future.cancel()
