"""Task functions the tests load into workers with `--tasks tests.tasks`."""

from __future__ import annotations

import os
import time
from typing import Any


def add(a: float, b: float) -> float:
    return a + b


def cube(x: int) -> int:
    return x * x * x


def fail(message: str) -> None:
    raise ValueError(message)


def pid(_: Any = None) -> int:
    """The pool process that ran the job."""
    return os.getpid()


def busy(seconds: float) -> int:
    """Sleep, then report which process slept."""
    time.sleep(seconds)
    return os.getpid()


def greet(name: str, greeting: str = "hello") -> str:
    return f"{greeting} {name}"


def unencodable(_: Any = None) -> object:
    return object()


def _private() -> None:
    """Not a task: names starting with an underscore are never served."""
