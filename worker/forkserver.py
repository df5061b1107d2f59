"""The worker's forkserver: the clean process every pool process is forked from.

It is one more Python interpreter, which imports the modules its pool
processes need (pool_signals first, see there) before it forks any. Started
as the first thing `python -m sockpool.worker join` does, it imports them
on the other core while the main process imports its own, instead of after:
a worker joins its broker sooner (about a third of its start-up here).
Importing this module costs nothing: it uses the standard library only.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

# pool_signals first: the forkserver ignores stop signals before it
# imports anything else, and so does every process it forks. pool_heap
# tunes its malloc for large arguments, inherited the same way (heap.py).
PRELOAD = ["sockpool.worker.pool_signals", "sockpool.worker.pool_heap", "sockpool.worker.runner"]


def forkserver_context() -> BaseContext:
    """The context the pool uses: forkserver, so that pool processes
    replaced while the worker's threads run are forked from a clean
    single-threaded server, never from the worker itself."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_early() -> None:
    """Start the forkserver now (it returns at once; the server preloads on
    its own). The pool finds it running later; if it has died meanwhile,
    the pool starts another, as it would have anyway."""
    forkserver_context()
    from multiprocessing import forkserver

    forkserver.ensure_running()
