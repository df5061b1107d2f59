"""`AsyncClient`: the Client for asyncio code, on the Client's own machinery.

    async with AsyncClient("broker:7341") as client:
        print(await client.submit("square", 7))
        async for value in client.map("square", range(100_000)):
            ...

An AsyncClient wraps a `Client`: the same link does the batching,
reconnecting, exactly-once delivery, credentials and TLS, and job options
(`retries`, `timeout`, anything `Client.with_options` knows) travel the
same path. What is added here is only the bridge to the event loop.

Rules:
1. Nothing here blocks the event loop. Connecting, closing and requests
   (`status`, `failed_jobs`) run in a thread; `submit` only queues (the
   link's sender thread sends), and never waits for room: to stream an
   endless input in bounded memory, use `map`, which keeps a window of
   chunks in flight and awaits results before it submits more.
2. Results cross from the client's reader thread to the loop in batches:
   one `call_soon_threadsafe` wakes the loop for every result that arrived
   before it ran, not one per job.
3. `map` yields to the event loop once per chunk even when results are
   already there, so a long map cannot starve other coroutines.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections import deque
from concurrent.futures import Future
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator

from sockpool.protocol import ConnectionLost
from sockpool.protocol.defaults import MAP_WINDOW_CHUNKS, MAX_MAP_CHUNK

from .api import Client
from .bridge import LoopBridge, LoopSlot
from .entries import failed_chunk_values
from .errors import JobFailed


class AsyncClient:
    """A connection to a sockpool broker for asyncio code.

    `AsyncClient(address, **options)` takes what `Client` takes (`retries=`,
    `timeout=`, `secret_file=`, `tls_ca=`, `session=`, ...); it connects
    on `async with` (or `await client.connect()`).
    """

    def __init__(self, address: str | None = None, **client_options: Any) -> None:
        self._address = address
        self._client_options = client_options
        self._client: Client | None = None
        self._bridge: LoopBridge | None = None
        self._options: dict[str, Any] = {}
        # Submitted since the loop last ran: handed to the client at once
        # (rule 1 and 2: one lock round per loop iteration, not per job).
        self._outbox: list[tuple[str, list[Any], dict[str, Any], bool, dict[str, Any], LoopSlot]] = []

    async def connect(self) -> AsyncClient:
        """Connect and shake hands, in a thread.

        Raises:
            ConnectionLost, HandshakeRefused, ValueError: as `Client`.
        """
        if self._client is None:
            self._bridge = LoopBridge(asyncio.get_running_loop())
            self._client = await asyncio.to_thread(Client, self._address, **self._client_options)
            self._options = self._client.options
        return self

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (in a thread); pending jobs fail with ConnectionLost."""
        if self._client is not None:
            self._hand_over()  # what was submitted goes (and fails) with the rest
            await asyncio.to_thread(self._client.close)

    @property
    def client(self) -> Client:
        """The underlying Client (for `session`, `cluster_processes`, ...).

        Raises:
            ConnectionLost: not connected yet.
        """
        if self._client is None:
            raise ConnectionLost("AsyncClient is not connected: use `async with` or `await client.connect()`")
        return self._client

    # -- jobs ---------------------------------------------------------------

    def submit(self, task: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue one job; returns at once with an awaitable handle (an
        asyncio.Future): `await client.submit(...)` is the result, or the
        JobFailed. Handles go to `asyncio.gather`, `asyncio.wait` and
        `as_completed`. Never blocks, never waits for room (see `map`).
        Cancelling a handle drops the result; the job still runs.

        Raises:
            ConnectionLost: the client is closed, gave up on its broker, or
                is not connected yet.
        """
        return self._submit(task, list(args), kwargs, False, self._options)

    def with_options(self, **options: Any) -> AsyncJobOptions:
        """`submit` and `map` with other job options, as `Client.with_options`
        makes them (`retries=`, `timeout=`, ...)."""
        return AsyncJobOptions(self, self.client.with_options(**options).options)

    def map(
        self,
        task: str,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> AsyncMap:
        """Run `task(item)` for every item (an iterable or an async iterable);
        `async for` the results in input order, or `await` the whole list
        (which skips asyncio's cost per item: see AsyncMap). As
        `Client.map`: it starts at once, items go in chunks, a fixed window
        of chunks is in flight, `timeout` bounds the wait for each chunk.

        Raises (while iterating, or from `await`):
            JobFailed: an item failed (unless `return_exceptions`).
            TimeoutError: `timeout` seconds passed before the next result.
            ValueError: chunksize below 1.
        """
        return self._map(task, items, chunksize, timeout, return_exceptions, self._options)

    async def as_completed(
        self, handles: Iterable[asyncio.Future[Any]], timeout: float | None = None
    ) -> AsyncIterator[asyncio.Future[Any]]:
        """The handles, each as soon as it is done (`await handle` then
        gives its result without waiting).

        Raises:
            TimeoutError: `timeout` seconds passed before all were done.
        """
        async for handle in as_completed(handles, timeout):
            yield handle

    # -- requests -----------------------------------------------------------

    async def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The broker's view of the cluster, as `Client.status`.

        Raises:
            ConnectionLost: no answer from the broker.
        """
        return await asyncio.to_thread(self.client.status, timeout)

    async def failed_jobs(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """As `Client.failed_jobs`."""
        return await asyncio.to_thread(self.client.failed_jobs, timeout)

    async def wait_accepted(self, timeout: float | None = None) -> bool:
        """As `Client.wait_accepted`: every job so far is durable at the broker."""
        return await asyncio.to_thread(self.client.wait_accepted, timeout)

    # -- internals ----------------------------------------------------------

    def _submit(
        self, task: str, args: list[Any], kwargs: dict[str, Any], many: bool, options: dict[str, Any]
    ) -> asyncio.Future[Any]:
        client = self.client
        if client._lost is not None:
            raise ConnectionLost(f"client is closed: {client._lost}")
        bridge = self._bridge
        assert bridge is not None
        future: asyncio.Future[Any] = bridge.loop.create_future()
        if not self._outbox:
            bridge.loop.call_soon(self._hand_over)
        self._outbox.append((task, args, kwargs, many, options, LoopSlot(bridge, future)))
        return future

    def _hand_over(self) -> None:
        """Give the client every job submitted since the loop last ran."""
        calls, self._outbox = self._outbox, []
        if not calls:
            return
        try:
            self.client._submit_many(calls)  # type: ignore[arg-type]
        except ConnectionLost as exc:
            for call in calls:
                if not call[5].future.done():
                    call[5].future.set_exception(ConnectionLost(str(exc)))

    def _map(
        self, task: str, items: Iterable[Any] | AsyncIterable[Any], chunksize: int | None,
        timeout: float | None, return_exceptions: bool, options: dict[str, Any],
    ) -> AsyncMap:
        if chunksize is None:
            chunksize = 1 if options else self._default_chunksize(items)
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        window: deque[tuple[asyncio.Future[Any], int]] = deque()
        if hasattr(items, "__aiter__"):
            chunks: AsyncIterator[list[Any]] | None = _async_chunks(items, chunksize)  # type: ignore[arg-type]
            plain = None
        else:
            chunks, plain = None, iter(items)  # type: ignore[arg-type]
            # Start now, not at the first `anext`, as Client.map (and Pool.map) do.
            self._refill_from(plain, window, task, chunksize, options)
        return AsyncMap(self._map_results(task, chunks, plain, window, chunksize, timeout, return_exceptions, options))

    def _refill_from(
        self, items: Iterator[Any], window: deque[tuple[asyncio.Future[Any], int]], task: str, chunksize: int,
        options: dict[str, Any],
    ) -> None:
        while len(window) < MAP_WINDOW_CHUNKS:
            chunk = list(itertools.islice(items, chunksize))
            if not chunk:
                return
            window.append((self._submit(task, chunk, {}, True, options), len(chunk)))

    async def _map_results(
        self, task: str, chunks: AsyncIterator[list[Any]] | None, plain: Iterator[Any] | None,
        window: deque[tuple[asyncio.Future[Any], int]], chunksize: int, timeout: float | None,
        return_exceptions: bool, options: dict[str, Any],
    ) -> AsyncIterator[Iterable[Any]]:
        """Each chunk's values, in order (see AsyncMap)."""
        async def refill() -> None:
            if plain is not None:
                self._refill_from(plain, window, task, chunksize, options)
                return
            assert chunks is not None
            while len(window) < MAP_WINDOW_CHUNKS:
                chunk = await anext(chunks, None)
                if chunk is None:
                    return
                window.append((self._submit(task, chunk, {}, True, options), len(chunk)))

        try:
            await refill()
            while window:
                future, size = window.popleft()
                await refill()
                yield await _chunk_values(future, size, timeout, return_exceptions)
                await asyncio.sleep(0)  # rule 3: let the loop run between chunks
        finally:
            for future, _ in window:
                future.cancel()

    def _default_chunksize(self, items: Any) -> int:
        if not hasattr(items, "__len__"):
            return 1
        processes = self.client.cluster_processes or os.cpu_count() or 1
        return max(1, min(MAX_MAP_CHUNK, math.ceil(len(items) / (4 * processes))))


class AsyncMap:
    """The results of `AsyncClient.map`, in input order, two ways:

        async for value in client.map(task, items): ...   # streams
        values = await client.map(task, items)             # the whole list

    `async for` costs what asyncio charges per item (an async generator
    step, some 0.17 us); `await` joins each chunk's list at C speed, so a
    bulk map is as fast as Client.map's. Use one or the other, once.
    """

    def __init__(self, chunks: AsyncIterator[Iterable[Any]]) -> None:
        self._chunks = chunks
        self._stream: AsyncIterator[Any] | None = None

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._stream is None:
            self._stream = _flatten(self._chunks)
        return self._stream

    def __anext__(self) -> Any:
        return self.__aiter__().__anext__()

    def __await__(self) -> Any:
        return self._all().__await__()

    async def _all(self) -> list[Any]:
        values: list[Any] = []
        async for chunk in self._chunks:
            values.extend(chunk)  # raises at a failed item, after the ones before it
        return values

    async def aclose(self) -> None:
        """Stop: chunks still in flight are cancelled (their results dropped)."""
        await self._chunks.aclose()  # type: ignore[attr-defined]


async def _flatten(chunks: AsyncIterator[Iterable[Any]]) -> AsyncIterator[Any]:
    async for chunk in chunks:
        for value in chunk:
            yield value


class AsyncJobOptions:
    """`client.with_options(...)`: submit and map with these job options."""

    def __init__(self, client: AsyncClient, options: dict[str, Any]) -> None:
        self._client = client
        self.options = options

    def submit(self, task: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return self._client._submit(task, list(args), kwargs, False, self.options)

    def map(
        self, task: str, items: Iterable[Any] | AsyncIterable[Any], *, chunksize: int | None = None,
        timeout: float | None = None, return_exceptions: bool = False,
    ) -> AsyncMap:
        return self._client._map(task, items, chunksize, timeout, return_exceptions, self.options)


async def as_completed(
    handles: Iterable[asyncio.Future[Any] | Future[Any]], timeout: float | None = None
) -> AsyncIterator[asyncio.Future[Any]]:
    """Handles (asyncio futures, or concurrent ones such as an Executor's,
    wrapped) in the order they finish; duplicates once.

    Raises:
        TimeoutError: `timeout` seconds passed before all were done.
    """
    loop = asyncio.get_running_loop()
    pending = {asyncio.wrap_future(h) if isinstance(h, Future) else h for h in handles}
    deadline = None if timeout is None else loop.time() + timeout
    while pending:
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            raise TimeoutError(f"{len(pending)} handles not done within {timeout} s")
        done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for handle in done:
            yield handle


async def _async_chunks(items: AsyncIterable[Any], size: int) -> AsyncIterator[list[Any]]:
    chunk: list[Any] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _chunk_values(
    future: asyncio.Future[Any], size: int, timeout: float | None, return_exceptions: bool
) -> Iterable[Any]:
    """One chunk's values; if items failed, an iterator that yields up to
    the first failure and then raises it (as Client.map does)."""
    try:
        return await asyncio.wait_for(future, timeout)  # type: ignore[no-any-return]
    except asyncio.TimeoutError:
        raise TimeoutError(f"no result within {timeout} s") from None
    except JobFailed as failed:
        return failed_chunk_values(failed, size, return_exceptions)
