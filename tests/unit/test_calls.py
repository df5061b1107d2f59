"""worker/calls.py: async def tasks and initializers, as a pool process runs them."""

from __future__ import annotations

import asyncio

import pytest

from sockpool.protocol.values import wire_args
from sockpool.worker import calls


async def double_later(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def refuse(x: int) -> None:
    await asyncio.sleep(0)
    raise LookupError(x)


def plain(x: int) -> int:
    return x + 1


def test_an_async_task_is_run_to_completion_and_a_plain_one_is_left_alone():
    assert calls.callable_for(plain) is plain
    run = calls.callable_for(double_later)
    assert [run(i) for i in range(3)] == [0, 2, 4]  # one event loop, kept between jobs
    with pytest.raises(LookupError):
        calls.callable_for(refuse)(7)


def test_an_initializer_runs_once_per_process_and_arguments():
    seen: list[tuple] = []

    def setup(*args):
        seen.append(args)

    tasks = {"m:setup": setup}
    calls._initialized.clear()
    for _ in range(3):
        assert calls.initialize(["m:setup", wire_args([1, (2, 3)])], tasks) is None
    assert calls.initialize(["m:setup", [4]], tasks) is None
    assert seen == [(1, (2, 3)), (4,)]


def test_a_failing_or_unknown_initializer_fails_the_job_with_a_reason():
    def broken():
        raise OSError("no database")

    calls._initialized.clear()
    error = calls.initialize(["m:broken", []], {"m:broken": broken})
    assert error is not None and error["type"] == "InitializerFailed" and "no database" in error["message"]
    assert calls.initialize(["m:broken", []], {"m:broken": broken}) is not None  # tried again next time
    assert "does not serve" in calls.initialize(["m:nope", []], {})["message"]
    assert "must be [task, args]" in calls.initialize("nonsense", {})["message"]
