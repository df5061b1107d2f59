"""Stand-ins for the functions CPython's concurrent.futures tests submit.

The tests submit builtins (`pow`, `divmod`, `time.sleep`, ...) and helpers
of their own module; a worker serves only functions of its task modules,
so these are the same functions living where a worker can load them
(`--tasks tests.cpython_tasks`). tests/cpython_executor.py maps each
original to its stand-in by name.
"""

from __future__ import annotations

import builtins
import sys
import time
from typing import Any

INITIALIZER_STATUS = "uninitialized"


def pow_(*args: Any) -> Any:
    return builtins.pow(*args)


def divmod_(a: Any, b: Any) -> Any:
    return builtins.divmod(a, b)


def str_(value: Any = "") -> str:
    return builtins.str(value)


def abs_(value: Any) -> Any:
    return builtins.abs(value)


def id_(value: Any) -> int:
    return builtins.id(value)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def mul(x: Any, y: Any) -> Any:
    return x * y


def capture(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


def sleep_and_raise(t: float) -> None:
    time.sleep(t)
    raise Exception("this is an exception")


def sleep_and_print(t: float, msg: str) -> None:
    time.sleep(t)
    print(msg)
    sys.stdout.flush()


class MyObject:
    def my_method(self) -> None:
        pass


def make_dummy_object(_: Any) -> MyObject:
    return MyObject()


def exit_() -> None:
    """Induces a sys exit with exitcode 1."""
    sys.exit(1)


def crash(delay: float | None = None) -> None:
    """Induces a segfault."""
    if delay:
        time.sleep(delay)
    import faulthandler

    faulthandler.disable()
    faulthandler._sigsegv()


def raise_error(err: Any) -> None:
    raise err()


def return_instance(cls: Any) -> Any:
    return cls()


def init(x: Any) -> None:
    global INITIALIZER_STATUS
    INITIALIZER_STATUS = x


def get_init_status() -> str:
    return INITIALIZER_STATUS


def int_(value: Any = 0) -> int:
    return builtins.int(value)


def crash_with_data(data: Any) -> None:
    """Induces a segfault with dummy data in input."""
    crash()
