"""CallbackResult (worker/pool.py): called back like ApplyResult, and
waitable like it, though it makes its event only for a waiter."""

from __future__ import annotations

import threading
import time

from sockpool.worker.pool import CallbackResult

WAIT_S = 10


class FakePool:
    """What ApplyResult needs of its pool: the cache of results in flight."""

    def __init__(self) -> None:
        self._cache: dict[int, object] = {}


def test_it_calls_back_and_leaves_the_cache():
    pool = FakePool()
    got: list[object] = []
    result = CallbackResult(pool, got.append, got.append)
    assert list(pool._cache.values()) == [result] and not result.ready()
    result._set(0, (True, 42))
    assert got == [42] and result.ready() and result.get(0) == 42 and pool._cache == {}
    failed = CallbackResult(pool, got.append, got.append)
    failed._set(0, (False, ValueError("no")))
    assert isinstance(got[-1], ValueError) and not failed.successful()


def test_a_waiter_before_the_result_is_woken_by_it():
    pool = FakePool()
    result = CallbackResult(pool, lambda _: None, lambda _: None)
    values: list[object] = []
    waiter = threading.Thread(target=lambda: values.append(result.get(WAIT_S)))
    waiter.start()
    deadline = time.monotonic() + WAIT_S
    while not isinstance(result._event, threading.Event) and waiter.is_alive() and time.monotonic() < deadline:
        waiter.join(0.001)  # until the waiter made its event (or failed)
    result._set(0, (True, "done"))
    waiter.join(WAIT_S)
    assert values == ["done"]
