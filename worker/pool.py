"""The stdlib process pool, adjusted for the worker: `ChunkPool`.

What it changes, and why (each measured, see bench/README.md):

- Each process it creates goes to `on_process` (the monitor) at once.
- Its maintenance thread wakes only when it has work (below).
- `apply_now` hands a small task to the pool processes from the calling
  thread when their pipe is empty (so the write cannot block), instead of
  waking the pool's task-handler thread to do it: a lone job skips one
  thread hand-off. Its result makes no threading.Event (CallbackResult).
  It never waits: with no room (or another write under way) the task goes
  through the task handler as `apply_async` sends it. The two write the
  same pipe, so they share one lock; CPython's task handler writes with
  no lock at all, being the only writer there. A task it pickled and
  found too large goes to the task handler with its pickle
  (`PickledTask`), which writes those bytes rather than pickle it again.

It owns no job bookkeeping: that is the Runner's and the ChunkBook's.
"""

from __future__ import annotations

import fcntl
import multiprocessing.pool
import struct
import termios
import threading
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable

# Where a pipe tells how many bytes are unread in it (Linux, the BSDs,
# macOS); elsewhere `apply_now` writes nothing itself.
_FIONREAD: int | None = getattr(termios, "FIONREAD", None)
# Tasks larger than this go through the task handler: multiprocessing
# writes up to 16 KiB (with its 4-byte prefix) in one write, which an
# empty pipe (64 KiB, or at least one page less than that) always takes.
_DIRECT_MAX_BYTES = 16 * 1024 - 4


class PickledTask(tuple):  # type: ignore[type-arg]
    """A pool task (a tuple, as the task handler expects) with its pickle
    already made: `apply_now` pickled it to learn its size, and a task
    over _DIRECT_MAX_BYTES goes to the task handler, which writes these
    bytes instead of pickling the task a second time (for a job with a
    1 MiB argument, a second 1 MiB pickle)."""

    payload: memoryview


class _NoWaiting:
    """A CallbackResult's event until someone waits: setting it does nothing."""

    def set(self) -> None:
        pass


_NO_WAITING = _NoWaiting()
# Guards a CallbackResult's event made by a waiter against its `_set`.
_EVENT_LOCK = threading.Lock()


class CallbackResult(multiprocessing.pool.ApplyResult):  # type: ignore[type-arg]
    """An ApplyResult that makes its threading.Event (a Condition over a
    lock) only if someone waits for it: the worker never does, it is
    called back. Creating that event for every task was the largest part
    of `apply_now` before its pipe write, on a lone job's way to the pool
    process (py-spy of the worker during lone round trips; 7-8 us -> 0.7-1.2
    us a result here). Mirrors ApplyResult's __init__ and _set (CPython
    3.8-3.13) but for the event."""

    _done = False

    def __init__(self, pool: Any, callback: Callable[[Any], None], error_callback: Callable[[BaseException], None]) -> None:
        self._pool = pool
        self._event: Any = _NO_WAITING
        self._job = next(multiprocessing.pool.job_counter)  # type: ignore[attr-defined]
        self._cache = pool._cache
        self._callback = callback
        self._error_callback = error_callback
        self._cache[self._job] = self

    def ready(self) -> bool:
        return self._done

    def wait(self, timeout: float | None = None) -> None:
        with _EVENT_LOCK:
            if self._done:
                return
            if self._event is _NO_WAITING:
                self._event = threading.Event()
        self._event.wait(timeout)

    def _set(self, i: int, obj: tuple[bool, Any]) -> None:
        self._success, self._value = obj
        if self._callback and self._success:
            self._callback(self._value)
        if self._error_callback and not self._success:
            self._error_callback(self._value)
        with _EVENT_LOCK:
            self._done = True
            self._event.set()
        del self._cache[self._job]
        self._pool = None


class ChunkPool(multiprocessing.pool.Pool):
    """A Pool that hands each process it creates to `on_process`: one that
    dies right after it started is reaped and gone from the pool's list
    before the monitor looks, and its exit code with it.

    Its maintenance thread wakes only when it has work. CPython's pool
    wakes its worker-handler thread whenever a result is waiting in the
    result pipe, and again each time its task cache runs empty; each wake
    rebuilds selectors and polls every process, and the thread spins until
    the result thread has read the pipe. Profiling showed it taking most of
    the worker's CPU when jobs are small (several wakes per job, holding
    the GIL the result and sender threads need). Here it wakes when a pool
    process exits (to replace it) or the pool's state changes (close,
    terminate), which is all its work is about.
    """

    def __init__(self, *args: Any, on_process: Callable[[Any], None], **kwargs: Any) -> None:
        self._on_process = on_process
        self._put_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        # The pool notifies its worker handler each time its task cache runs
        # empty, which with one job at a time is after every job. A result
        # that never completes keeps the cache from emptying; it is never
        # waited on, and `terminate()` (all Runner.close uses) ignores it.
        self._never_done = multiprocessing.pool.ApplyResult(self, None, None)  # type: ignore[call-arg]

    def _setup_queues(self) -> None:
        super()._setup_queues()  # type: ignore[misc]
        send = self._quick_put  # type: ignore[has-type]
        send_bytes = self._inqueue._writer.send_bytes  # type: ignore[attr-defined]
        lock = self._put_lock

        def put(task: Any) -> None:
            with lock:  # the task handler's writes, whole, between ours
                if type(task) is PickledTask:
                    send_bytes(task.payload)
                else:
                    send(task)

        self._quick_put = put

    def apply_now(
        self, func: Callable[..., Any], args: tuple[Any, ...], callback: Callable[[Any], None],
        error_callback: Callable[[BaseException], None],
    ) -> multiprocessing.pool.ApplyResult[Any]:
        """`apply_async`, but written to the pool processes' pipe from this
        thread when it has room right now; never waits.

        Raises:
            ValueError: the pool is closed.
        """
        self._check_running()  # type: ignore[attr-defined]
        result: multiprocessing.pool.ApplyResult[Any] = CallbackResult(self, callback, error_callback)
        task = (result._job, 0, func, args, {})  # type: ignore[attr-defined]
        unsent = self._send_now(task)
        if unsent is not None:
            self._taskqueue.put(([unsent], None))  # type: ignore[attr-defined]
        return result

    def _send_now(self, task: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Write `task` to the pipe if that cannot block; None if sent, else
        what the task handler is to send (tasks in the pipe or queued,
        another writer, or it cannot be pickled: the task itself, which the
        task handler sends, or fails, as any task; too big: the task with
        its pickle, a `PickledTask`)."""
        if _FIONREAD is None or not self._taskqueue.empty():  # type: ignore[attr-defined]
            return task  # tasks already waiting go first
        if not self._put_lock.acquire(blocking=False):
            return task
        try:
            writer = self._inqueue._writer  # type: ignore[attr-defined]
            # Only into an empty pipe: its free room is then certain (16
            # pages; small writes share pages, so bytes unread would not
            # tell how much more fits). Nothing else writes while we hold
            # the lock, and the processes only take out: the write cannot
            # block. An empty pipe is also the lone job's case: every
            # process has taken its task, and an idle one reads ours at once.
            (unread,) = struct.unpack("i", fcntl.ioctl(writer.fileno(), _FIONREAD, b"\0\0\0\0"))
            if unread:
                return task
            try:
                payload = ForkingPickler.dumps(task)
            except Exception:
                return task
            if len(payload) > _DIRECT_MAX_BYTES:
                # The pickle is a view of its own buffer, which nothing
                # else holds or writes: safe to keep until it is sent.
                pickled = PickledTask(task)
                pickled.payload = payload
                return pickled
            writer.send_bytes(payload)  # one write: at most 16 KiB
            return None
        except OSError:
            return task  # closing: the task handler's path says how it ends
        finally:
            self._put_lock.release()

    def _get_sentinels(self) -> list[Any]:
        # The base class adds the result pipe's reader; the state-change
        # notifier is all the worker handler needs besides process sentinels.
        return [self._change_notifier._reader]  # type: ignore[attr-defined]

    def Process(self, ctx: Any, *args: Any, **kwds: Any) -> Any:  # type: ignore[override]
        proc = super().Process(ctx, *args, **kwds)
        # Pool processes ignore SIGTERM (see pool_signals.py), which is what
        # the pool's terminate() sends them: it must kill them instead.
        proc.terminate = proc.kill
        self._on_process(proc)
        return proc
