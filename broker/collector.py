"""The cyclic garbage collector in a broker process: collected less often
under load, kept off a restore's million new objects."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


# The cyclic collector's first threshold for a broker process (CPython's
# default is 700 allocations). Jobs in flight survive the young
# generation, so with the default it ran hundreds of times a second under
# load, walking them: 57 -> 14 ms of 20,000 jobs' broker CPU (about 2 us a
# job). The broker makes few cycles (jobs, messages and results are freed
# by reference counting), so collecting less often costs no memory to speak of.
COLLECT_AFTER_ALLOCATIONS = 20_000


def tune_collector() -> None:
    """For a process that runs a broker (`broker start`), not for a program
    embedding one: what it imported and built so far is moved out of the
    cyclic collector's sight, and the young generation is collected after
    COLLECT_AFTER_ALLOCATIONS instead of 700."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(COLLECT_AFTER_ALLOCATIONS, middle, old)


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Restore a million jobs without the cyclic collector walking them over
    and over as they are created (it took most of a restart's time), then
    move them out of its sight: they hold no cycles, and refcounting frees
    each when its job ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
