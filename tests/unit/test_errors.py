"""client/errors.py: JobFailed, and the built-in exception it stands for."""

from __future__ import annotations

import builtins
import pickle
from concurrent.futures.process import BrokenProcessPool

import pytest

from sockpool.client import JobFailed
from sockpool.protocol import SockpoolError
from sockpool.protocol.values import wire_value


def failed(type_name: str, message: str = "it broke", traceback: str = "") -> JobFailed:
    return JobFailed({"type": type_name, "message": message, "traceback": traceback})


@pytest.mark.parametrize("base", [ValueError, KeyError, ZeroDivisionError, OSError, FileNotFoundError, AttributeError, RuntimeError])
def test_a_builtin_remote_exception_is_caught_by_its_own_class(base):
    with pytest.raises(base) as caught:
        raise failed(base.__name__)
    assert isinstance(caught.value, JobFailed) and isinstance(caught.value, SockpoolError)
    assert caught.value.remote_type == base.__name__


@pytest.mark.parametrize(
    "type_name",
    ["KeyboardInterrupt", "GeneratorExit", "StopIteration", "UnicodeDecodeError", "ExceptionGroup",
     "UnknownTask", "PoisonJob", "Timeout", "MyAppError", "print", "__import__", "Exception", ""],
)
def test_other_remote_types_stay_a_plain_job_failed(type_name):
    """Nothing that speaks of this process (an interrupt), misbehaves in a
    generator, or needs arguments of its own; nothing but built-ins; never
    a function."""
    error = failed(type_name)
    assert type(error).__mro__[1:] == JobFailed.__mro__[1:]
    assert not isinstance(error, (SystemExit, KeyboardInterrupt, StopIteration))


def test_a_remote_sys_exit_is_a_system_exit_with_its_code():
    """ProcessPoolExecutor re-raises a task's SystemExit; so does sockpool."""
    error = JobFailed({"type": "SystemExit", "message": "1", "args": [1]})
    assert isinstance(error, SystemExit) and isinstance(error, JobFailed)
    assert error.code == 1 and error.args == (1,)
    with pytest.raises(SystemExit):
        raise error


def test_a_dead_pool_process_is_a_broken_process_pool():
    error = failed("WorkerProcessDied", "the pool process running the job died (exit code -9)")
    assert isinstance(error, BrokenProcessPool) and isinstance(error, JobFailed)


def test_what_cannot_be_sent_fails_as_it_would_to_pickle():
    import pickle

    for code in ("UnencodableArguments", "UnencodableResult"):
        assert isinstance(failed(code, "can not serialize 'object' object"), pickle.PicklingError)


def test_args_are_the_remote_exceptions_own_args_when_msgpack_carried_them():
    assert JobFailed({"type": "RuntimeError", "message": "123", "args": ["123"]}).args == ("123",)
    assert JobFailed({"type": "KeyError", "message": "(1, 2)", "args": wire_value([(1, 2), 2**70])}).args == ((1, 2), 2**70)
    # Args that could not travel (or an older worker): one descriptive string.
    assert failed("ValueError", "bad").args == ("ValueError: bad",)
    broken = msgpack_ext_with_bad_data()
    assert JobFailed({"type": "ValueError", "message": "m", "args": broken}).args == ("ValueError: m",)


def msgpack_ext_with_bad_data():
    import msgpack

    return msgpack.ExtType(2, b"\xc1")


def test_every_builtin_exception_name_makes_a_job_failed_that_works():
    for name in dir(builtins):
        base = getattr(builtins, name)
        if isinstance(base, type) and issubclass(base, BaseException):
            error = failed(name, "m", "Traceback ...")
            assert isinstance(error, JobFailed)
            assert str(error) == f"{name}: m\n\nRemote traceback:\nTraceback ..."
            copy = pickle.loads(pickle.dumps(error))
            assert type(copy) is type(error) and copy.remote_message == "m"


def test_the_remote_side_says_the_message_and_the_traceback():
    error = failed("ValueError", "bad input", "Traceback (most recent call last):\n  ...\nValueError: bad input\n")
    assert (error.remote_type, error.remote_message) == ("ValueError", "bad input")
    assert str(error).startswith("ValueError: bad input\n\nRemote traceback:\nTraceback")
    assert str(failed("UnknownTask", "no worker")) == "UnknownTask: no worker"
