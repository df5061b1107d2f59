"""A job's future, and a map's results, with cancellation through the broker.

`JobFuture.cancel()` keeps the stdlib's contract: it returns True, and the
future is cancelled, unless the future is done (or running, once the
client learns that a worker started it); it never blocks. Cancelling also
withdraws the job: dropped here if it was never sent, else the broker
removes it if it is still waiting, so it never runs. A job that a worker
already holds is left to finish and its result is dropped, as the stdlib
leaves a running call alone.

Stopping a running job is a different request with a different answer, so
it has its own name: `Client.cancel(future)` asks the broker, waits for
its decision, and returns whether the job was cancelled or stopped (True:
the future is cancelled) or had already finished (False: the future has,
or will have, its result). The broker decides under one lock: one outcome.
"""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from .api import Client


class JobCancelled(CancelledError):
    """The job was stopped after its future was already marked running."""


class JobFuture(Future[Any]):
    """The future of one job (or one map chunk) submitted by a `Client`."""

    def __init__(self, client: Client, job_id: int) -> None:
        super().__init__()
        self._client = client
        self.job_id = job_id  # the client's id for the job, as in `collect`

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._client._withdraw(self.job_id)
        return True


def mark_cancelled(future: Future[Any]) -> None:
    """The broker cancelled or stopped the job: end its future cancelled
    (without asking the broker again)."""
    try:
        if not Future.cancel(future) and not future.done():
            # Running (the stdlib will not cancel that): fail it with a
            # CancelledError, which is what result() raises for a cancel.
            future.set_exception(JobCancelled("the job was stopped"))
    except InvalidStateError:
        pass  # its result won the race


class MapResults(Iterator[Any]):
    """What `Client.map` returns: iterate it for the results in order;
    `cancel()` stops the map: no more chunks are submitted, and those not
    finished are cancelled (queued ones removed, running ones stopped)."""

    def __init__(
        self, client: Client, submit_chunk: Callable[[list[Any]], Future[Any]], items: Iterator[Any],
        chunksize: int, window_chunks: int, values: Callable[[Future[Any], int], Iterable[Any]],
    ) -> None:
        self._client = client
        self._submit_chunk = submit_chunk
        self._items = items
        self._chunksize = chunksize
        self._window_chunks = window_chunks
        self._values = values
        self._window: deque[tuple[Future[Any], int]] = deque()
        self._current: tuple[Future[Any], int] | None = None  # the chunk being read
        self._stopped = False
        self._refill()  # start now, not at the first next(), like Pool.map
        # chain walks each chunk's list in C: no Python frame per item.
        self._chain = itertools.chain.from_iterable(self._chunks())

    def __iter__(self) -> Iterator[Any]:
        return self._chain

    def __next__(self) -> Any:
        return next(self._chain)

    def cancel(self, timeout: float = 10.0) -> bool:
        """Cancel every chunk not finished; True if any was. Iterating
        afterwards raises CancelledError at the first cancelled chunk.

        Raises:
            ConnectionLost: no answer from the broker.
        """
        self._stopped = True
        current = [self._current[0]] if self._current is not None else []
        return self._client.cancel(current + [future for future, _ in self._window], timeout)

    def _refill(self) -> None:
        while not self._stopped and len(self._window) < self._window_chunks:
            chunk = list(itertools.islice(self._items, self._chunksize))
            if not chunk:
                return
            self._window.append((self._submit_chunk(chunk), len(chunk)))

    def _chunks(self) -> Iterator[Iterable[Any]]:
        while self._window:
            self._current = self._window.popleft()
            self._refill()
            yield self._values(*self._current)
        self._current = None
