"""JobFailed: a job's remote error, raised in the caller; BrokerRefused: the
broker takes no new jobs right now."""

from __future__ import annotations

import builtins
import functools
from concurrent.futures.process import BrokenProcessPool
from pickle import PicklingError
from typing import Any

from sockpool.protocol import SockpoolError
from sockpool.protocol.messages import (
    E_INITIALIZER_FAILED,
    E_PROCESS_DIED,
    E_UNENCODABLE_ARGUMENTS,
    E_UNENCODABLE_RESULT,
)
from sockpool.protocol.values import from_wire_value

# sockpool's own failure codes that a process pool user catches as a
# stdlib exception: a pool process that died breaks a ProcessPoolExecutor,
# and what cannot be sent (for sockpool: encoded) fails to pickle there.
_STDLIB_BASES: dict[str, type[BaseException]] = {
    E_PROCESS_DIED: BrokenProcessPool,
    E_INITIALIZER_FAILED: BrokenProcessPool,
    E_UNENCODABLE_ARGUMENTS: PicklingError,
    E_UNENCODABLE_RESULT: PicklingError,
}


class JobFailed(SockpoolError):
    """A job ended in an error; carries what the remote side said.

    When the remote exception is one of Python's built-in exceptions, the
    JobFailed is an instance of that class too: `except ValueError:` around
    a result catches a task's ValueError, as with ProcessPoolExecutor. Only
    built-ins: a class named by the remote side is never imported. A
    remote SystemExit is a SystemExit too (uncaught, it ends the program,
    as ProcessPoolExecutor's does); a `WorkerProcessDied` is a
    `concurrent.futures.process.BrokenProcessPool`, and arguments or a
    result msgpack cannot carry (`UnencodableArguments`,
    `UnencodableResult`) a `pickle.PicklingError`.

    `args` are the remote exception's own args when msgpack could carry
    them (`RuntimeError(123)` gives `(123,)`), else one string
    "Type: message".

    Attributes:
        remote_type: the remote exception's class name, e.g. "ZeroDivisionError",
            or a sockpool code such as "UnknownTask".
        remote_message: the remote exception's message.
        remote_traceback: the remote traceback text ("" when none).
    """

    def __new__(cls, error: dict[str, Any]) -> JobFailed:
        if cls is JobFailed:
            kind = str(error.get("type", ""))
            cls = BrokerFull if kind == E_BROKER_FULL else _with_builtin_base(kind)
        return super().__new__(cls, error)

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.remote_type = str(error.get("type", "Error"))
        self.remote_message = str(error.get("message", ""))
        self.remote_traceback = str(error.get("traceback", ""))
        self.items = error.get("items")
        super().__init__(f"{self.remote_type}: {self.remote_message}")
        remote_args = error.get("args")
        try:
            remote_args = from_wire_value(remote_args)
        except SockpoolError:
            remote_args = None
        if isinstance(remote_args, (list, tuple)):
            self.args = tuple(remote_args)
        if isinstance(self, SystemExit):
            # SystemExit's own __init__ (which sets `code`) is not in our MRO's
            # chain of calls; mirror it.
            self.code = None if not self.args else self.args[0] if len(self.args) == 1 else self.args

    def __str__(self) -> str:
        text = f"{self.remote_type}: {self.remote_message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as the plain class, which rebuilds the right subclass.
        return JobFailed, (self.error,)


# The broker's refusal of a job over one of its quotas (broker/quota.py).
E_BROKER_FULL = "BrokerFull"


class BrokerFull(JobFailed):
    """The broker refused the job: it holds as many jobs (or bytes) as its
    limits allow, in all or for this session. Nothing was queued; submit
    again once jobs have finished."""


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
    base = _STDLIB_BASES.get(type_name) or getattr(builtins, type_name, None)
    # Exceptions, and SystemExit as the stdlib pools re-raise it; not
    # KeyboardInterrupt or GeneratorExit, which say something about this
    # process, not the remote one. Not StopIteration: raised in a
    # generator, it turns into a RuntimeError.
    if (
        not (isinstance(base, type) and (issubclass(base, Exception) or base is SystemExit))
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
