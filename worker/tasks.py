"""The built-in tasks every worker serves, addressed by their bare names.

Other tasks come only from the modules a worker is started with
(`--tasks MODULE`), addressed as `MODULE:function`.
"""

from __future__ import annotations

import time
from typing import Any


def square(x: float) -> float:
    """x * x."""
    return x * x


def echo(value: Any) -> Any:
    """The argument, unchanged: for testing a round trip."""
    return value


def sleep(seconds: float) -> float:
    """Sleep, then return the seconds slept: for demos and scheduling tests."""
    time.sleep(seconds)
    return seconds
