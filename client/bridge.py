"""Outcomes of jobs, from the client's reader thread to an event loop.

The Client resolves whatever object it was given for a job (anything
with set_result, set_exception and mark_running); for an AsyncClient job
that is a `LoopSlot`, which hands the outcome to its loop's `LoopBridge`.
The bridge wakes the loop once for every outcome that arrived before the
loop ran (one `call_soon_threadsafe` per burst, not per job), and the
loop sets the asyncio futures. Nothing here blocks the loop: the lock is
held only to swap a list.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class LoopBridge:
    """Hands outcomes from the client's threads to one event loop, batched."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Any], bool, Any]] = []

    def deliver(self, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        with self._lock:
            wake = not self._ready
            self._ready.append((future, ok, value))
        if wake:
            try:
                self.loop.call_soon_threadsafe(self._flush)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

    def _flush(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for future, ok, value in ready:
            if future.done():
                continue  # cancelled by its awaiter; the job ran anyway
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


class LoopSlot:
    """What the Client resolves for one async job (it takes any object with
    these three methods): the outcome goes through the bridge."""

    __slots__ = ("bridge", "future")

    def __init__(self, bridge: LoopBridge, future: asyncio.Future[Any]) -> None:
        self.bridge = bridge
        self.future = future

    def set_result(self, value: Any) -> None:
        self.bridge.deliver(self.future, True, value)

    def set_exception(self, exc: BaseException) -> None:
        self.bridge.deliver(self.future, False, exc)

    def mark_running(self) -> None:
        pass  # asyncio futures have no RUNNING state
