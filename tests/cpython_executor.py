"""`ClusterExecutor`: sockpool's Executor built as CPython's tests build theirs.

CPython's concurrent.futures tests make executors as
`executor_type(max_workers=..., mp_context=...)` and submit builtins and
functions of their own module. This subclass is the whole adaptation:
it connects to the test cluster (`ClusterExecutor.address`, or
$SOCKPOOL_BROKER in a child script) and hands each submitted function's
stand-in of the same name in tests/cpython_tasks.py to the real Executor.
Everything else is sockpool's: a bound method, a lambda or a class is
refused exactly as a user's would be.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import tests.cpython_tasks as stand_ins
from sockpool import Executor

# Where the originals live: builtins, `time`, and the test module itself
# (test.test_concurrent_futures, or its submodules in Python 3.12+).
_ORIGIN_MODULES = ("builtins", "time", "test.test_concurrent_futures")


def stand_in(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The stand-in for a builtin or a test-module function, else `fn`."""
    module = getattr(fn, "__module__", None) or ""
    if not (module in _ORIGIN_MODULES or module.startswith("test.test_concurrent_futures.")):
        return fn
    if type(fn).__name__ == "method":
        return fn  # a bound method: refused, as sockpool refuses any
    name = getattr(fn, "__name__", "").strip("_")
    for candidate in (name, name + "_"):
        found = getattr(stand_ins, candidate, None)
        if callable(found) and getattr(found, "__module__", "") == stand_ins.__name__:
            return found  # type: ignore[no-any-return]
    return fn


class ClusterExecutor(Executor):
    address: str | None = None  # None: $SOCKPOOL_BROKER

    def __init__(self, max_workers: int | None = None, mp_context: Any = None, **kwargs: Any) -> None:
        # mp_context: the workers' own pool processes run the calls.
        if kwargs.get("initializer") is not None:
            kwargs["initializer"] = stand_in(kwargs["initializer"])
        super().__init__(self.address, max_workers=max_workers, **kwargs)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(stand_in(fn), *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        return super().map(stand_in(fn), *iterables, timeout=timeout, chunksize=chunksize)
