"""worker/pool.py: `apply_now` feeds the pool processes from the calling
thread without ever waiting, and every task runs exactly once, whichever
way it went (written at once, or queued for the task handler when the
pipe had no room). Real pool processes; no broker."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

from sockpool.worker.pool import ChunkPool
from tests import tasks

WAIT_S = 20.0


def _pool(processes: int) -> ChunkPool:
    return ChunkPool(processes, context=multiprocessing.get_context("forkserver"), on_process=lambda proc: None)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), "the pool process never started the task"


def test_apply_now_never_waits_for_a_busy_process_and_runs_every_task_once(tmp_path):
    pool = _pool(1)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    all_back = threading.Event()
    count = 2000  # their pickles would fill a 64 KiB pipe (about 1,200 fit)
    try:
        finished = threading.Event()
        marker = tmp_path / "started"
        busy = pool.apply_now(tasks.hang_noting_pid, (str(marker), 1.5), lambda _: finished.set(), errors.append)
        _wait_for(marker)  # the only process took it: the pipe is empty

        def done(i: int) -> Any:
            def record(value: Any) -> None:
                results[i] = value
                if len(results) == count:
                    all_back.set()
            return record

        sent = []
        send_now = pool._send_now
        pool._send_now = lambda task: sent.append(send_now(task)) or sent[-1]  # type: ignore[method-assign]
        for i in range(count):
            pool.apply_now(tasks.cube, (i,), done(i), errors.append)
        # Every call returned while the only process was still busy: none
        # waited for it to read the pipe.
        assert not busy.ready()
        # The first went straight into the empty pipe (nothing left to
        # send); with a task unread there, the rest queued for the task
        # handler, in order.
        assert sent[0] is None and any(unsent is not None for unsent in sent)
        assert all_back.wait(WAIT_S), f"{len(results)} of {count} came back"
        assert finished.wait(WAIT_S)
        assert not errors
        assert results == {i: i**3 for i in range(count)}
    finally:
        pool.terminate()
        pool.join()


class CountedPickles:
    """Bytes that count how often they are pickled (in this process)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pickled = 0

    def __reduce__(self) -> tuple[Any, ...]:
        self.pickled += 1
        return (bytes, (self.data,))


def test_a_task_too_large_to_write_at_once_is_pickled_once_and_runs():
    pool = _pool(1)
    errors: list[BaseException] = []
    try:
        assert pool.apply_now(tasks.cube, (2,), lambda _: None, errors.append).get(WAIT_S) == 8  # pipe empty now
        data = os.urandom(1 << 20)
        large = CountedPickles(data)
        # apply_now pickles it to learn its size; the task handler writes that pickle.
        assert pool.apply_now(tasks.digest, (large,), lambda _: None, errors.append).get(WAIT_S) == tasks.digest(data)
        assert large.pickled == 1
        assert not errors
    finally:
        pool.terminate()
        pool.join()


def test_a_task_that_cannot_be_pickled_fails_through_its_error_callback():
    pool = _pool(1)
    failed = threading.Event()
    errors: list[BaseException] = []
    try:
        pool.apply_now(tasks.cube, (lambda: 1,), lambda _: None, lambda exc: (errors.append(exc), failed.set()))
        assert failed.wait(WAIT_S)
        assert errors and "pickle" in str(errors[0]).lower()
        # The pool goes on serving.
        assert pool.apply_now(tasks.cube, (3,), lambda _: None, errors.append).get(WAIT_S) == 27
    finally:
        pool.terminate()
        pool.join()


def test_apply_now_refuses_once_the_pool_is_closed():
    pool = _pool(1)
    pool.terminate()
    pool.join()
    deadline = time.monotonic() + WAIT_S
    try:
        pool.apply_now(tasks.cube, (1,), lambda _: None, lambda _: None)
    except ValueError:
        pass
    else:
        raise AssertionError("apply_now accepted a task on a closed pool")
    assert time.monotonic() < deadline
