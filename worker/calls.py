"""How a pool process calls a task, beyond `fn(*args, **kwargs)`.

- An `async def` task runs to completion on the pool process's own event
  loop (one per process, made on first use and kept, so a job pays for no
  loop set-up); to the worker it is a task like any other.
- A job whose options carry `init` (an Executor's `initializer=`) first
  runs that task once in this process: once per distinct initializer and
  arguments, before the first job that names it, as a process pool runs
  its initializer in each new process.

Runs inside the pool processes only; no sockets, no threads.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable

from sockpool.protocol import ProtocolError, error_value
from sockpool.protocol.messages import E_INITIALIZER_FAILED
from sockpool.protocol.values import from_wire_value, pack_value

_loop: asyncio.AbstractEventLoop | None = None
# The (task, args) of each initializer this process has run, packed.
_initialized: set[bytes] = set()


def callable_for(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, or for an `async def` function one that runs it to completion."""
    if not inspect.iscoroutinefunction(fn):
        return fn

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return _event_loop().run_until_complete(fn(*args, **kwargs))

    return run


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def initialize(init: Any, tasks: dict[str, Callable[..., Any]]) -> dict[str, Any] | None:
    """Run the initializer `init` ([task, args]) unless this process ran it
    already; the error map of a job that cannot run because of it, or None."""
    try:
        key = pack_value(init)
    except Exception as exc:
        return error_value(E_INITIALIZER_FAILED, f"the initializer cannot be read: {exc}")
    if key in _initialized:
        return None
    if not (isinstance(init, list) and len(init) == 2 and isinstance(init[0], str)):
        return error_value(E_INITIALIZER_FAILED, "the initializer must be [task, args]")
    fn = tasks.get(init[0])
    if fn is None:
        return error_value(E_INITIALIZER_FAILED, f"this worker does not serve the initializer {init[0]!r}")
    try:
        args = from_wire_value(init[1])
        fn(*args)
    except ProtocolError as exc:
        return error_value(E_INITIALIZER_FAILED, f"the initializer's arguments cannot be read: {exc}")
    except BaseException as exc:  # SystemExit too: it must not kill the pool process
        import traceback

        return error_value(E_INITIALIZER_FAILED, f"the initializer failed: {type(exc).__name__}: {exc}",
                           traceback.format_exc())
    _initialized.add(key)
    return None
