"""JobFailed: a job's remote error, raised in the caller; BrokerRefused: the
broker takes no new jobs right now."""

from __future__ import annotations

import builtins
import functools
from typing import Any

from sockpool.protocol import SockpoolError


class JobFailed(SockpoolError):
    """A job ended in an error; carries what the remote side said.

    When the remote exception is one of Python's built-in exceptions, the
    JobFailed is an instance of that class too: `except ValueError:` around
    a result catches a task's ValueError, as with ProcessPoolExecutor. Only
    built-ins: a class named by the remote side is never imported.

    Attributes:
        remote_type: the remote exception's class name, e.g. "ZeroDivisionError",
            or a sockpool code such as "UnknownTask".
        remote_message: the remote exception's message.
        remote_traceback: the remote traceback text ("" when none).
    """

    def __new__(cls, error: dict[str, Any]) -> JobFailed:
        if cls is JobFailed:
            cls = _with_builtin_base(str(error.get("type", "")))
        return super().__new__(cls, error)

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.remote_type = str(error.get("type", "Error"))
        self.remote_message = str(error.get("message", ""))
        self.remote_traceback = str(error.get("traceback", ""))
        self.items = error.get("items")
        super().__init__(f"{self.remote_type}: {self.remote_message}")

    def __str__(self) -> str:
        text = f"{self.remote_type}: {self.remote_message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as the plain class, which rebuilds the right subclass.
        return JobFailed, (self.error,)


class BrokerRefused(SockpoolError):
    """The broker refuses new jobs for now (its disk is full, say); raised
    by a `submit` that would otherwise wait for room without end. Jobs
    already accepted are safe; submit again once the broker recovers.

    Attributes:
        code: the refusal's code, e.g. "DiskFull".
        message: what the broker said, e.g. "broker cannot store jobs: disk full".
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@functools.lru_cache(maxsize=None)
def _with_builtin_base(type_name: str) -> type[JobFailed]:
    """JobFailed, also derived from the built-in exception `type_name` if
    there is one it can be combined with."""
    base = getattr(builtins, type_name, None)
    # Exception only: a JobFailed that were a SystemExit or a
    # KeyboardInterrupt would end the program that failed to catch it. Not
    # StopIteration: raised in a generator, it turns into a RuntimeError.
    if (
        not (isinstance(base, type) and issubclass(base, Exception))
        or issubclass(JobFailed, base)
        or issubclass(base, (StopIteration, StopAsyncIteration))
    ):
        return JobFailed
    try:
        combined = type("JobFailed", (JobFailed, base), {"__module__": __name__, "__qualname__": "JobFailed"})
        combined({"type": type_name})  # some bases insist on arguments of their own
    except TypeError:
        return JobFailed
    return combined
