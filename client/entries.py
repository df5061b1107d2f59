"""What the client puts on the wire for a job and takes off it for a result.

A job entry carries its arguments as wire values (protocol/values.py: a
map chunk's items packed, tuples and big ints as extension values); a
result entry's value is turned back into the Python value it stands for.
A map chunk's result is a list of values, or a failure that says how each
item went; `chunk_values` turns either into what `map` yields.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator

from sockpool.protocol import SockpoolError
from sockpool.protocol.limits import MAX_TIMEOUT_S
from sockpool.protocol.messages import (
    DEFAULT_QUEUE,
    E_UNENCODABLE_RESULT,
    MAX_KEY_CHARS,
    MAX_LIMIT,
    MAX_PRIORITY,
    MAX_QUEUE_NAME_CHARS,
    MAX_RETRIES,
    MIN_PRIORITY,
    error_value,
    valid_queue_name,
)
from sockpool.protocol.packed import pack_array
from sockpool.protocol.values import from_wire_error, from_wire_value, wire_args, wire_kwargs

from .errors import JobFailed


def job_options(
    retries: int, timeout: float | None, result: str | None = None, *, key: str | None = None,
    limit_key: str | None = None, limit: int | None = None, queue: str | None = None,
    priority: int = 0, delay: float | timedelta | None = None, at: datetime | float | None = None,
) -> dict[str, Any]:
    """The `options` of a job entry; only what differs from the defaults.

    Raises:
        ValueError: a negative retry count, a non-positive timeout, an
            empty or over-long key, a limit below 1, a bad queue name, a
            priority out of range, a negative or non-finite delay, or an
            `at` that is a naive datetime.
    """
    for name, value in (("key", key), ("limit_key", limit_key)):
        if value is not None and not (isinstance(value, str) and 0 < len(value) <= MAX_KEY_CHARS):
            raise ValueError(f"{name} must be a string of 1 to {MAX_KEY_CHARS} characters")
    if limit is not None and not (type(limit) is int and 1 <= limit <= MAX_LIMIT):
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    if retries < 0 or retries > MAX_RETRIES:
        raise ValueError(f"retries must be between 0 and {MAX_RETRIES}")
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be positive and at most {MAX_TIMEOUT_S:.0f} s")
    options: dict[str, Any] = {}
    if retries:
        options["retries"] = retries
    if timeout is not None:
        options["timeout"] = float(timeout)
    if result is not None:
        options["result"] = result
    if key is not None:
        options["key"] = key
    if limit_key is not None:
        options["limit_key"] = limit_key
    if limit is not None:
        options["limit"] = limit
    if queue is not None and queue != DEFAULT_QUEUE:
        if not valid_queue_name(queue):
            raise ValueError(f"queue names are 1 to {MAX_QUEUE_NAME_CHARS} letters, digits and _.:- (got {queue!r})")
        options["queue"] = queue
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}")
    if priority:
        options["priority"] = priority
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("delay must be a finite number of seconds, 0 or more")
        if seconds:
            options["delay"] = seconds
    if at is not None:
        if isinstance(at, datetime):
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError("at must be an aware datetime (with a tzinfo), not a naive one")
            stamp = at.timestamp()
        else:
            stamp = float(at)
        if not math.isfinite(stamp):
            raise ValueError("at must be a finite time")
        options["at"] = stamp
    return options


def job_entry(job_id: int, task: str, args: list[Any], kwargs: dict[str, Any], many: bool,
           options: dict[str, Any]) -> list[Any]:
    """A job entry for the wire. A chunk's items travel packed: only the
    worker's pool unpacks them. Tuples and big ints travel as extension
    values (protocol/values.py); what msgpack cannot encode at all is left
    for the link to refuse, for this job alone."""
    try:
        packed = pack_array(args) if many else wire_args(args)
        kwargs = wire_kwargs(kwargs)
    except Exception:  # msgpack raises TypeError, ValueError, OverflowError...
        packed = args
    return [job_id, task, packed, kwargs, many, options] if options else [job_id, task, packed, kwargs, many]


def result_entry(entry: list[Any]) -> list[Any]:
    """A result entry with its value as the Python value it stands for: a
    map chunk's packed values as a list, tuples as tuples, big ints."""
    job_id, ok, value = entry
    try:
        return [job_id, ok, from_wire_value(value) if ok else from_wire_error(value)]
    except SockpoolError as exc:
        return [job_id, False, error_value(E_UNENCODABLE_RESULT, f"the job's result cannot be read: {exc}")]


def chunk_values(future: Future[Any], size: int, timeout: float | None, return_exceptions: bool) -> Iterable[Any]:
    """The values of one map chunk: its result list, or, if items failed,
    an iterator that yields up to the first failure and then raises it."""
    try:
        return future.result(timeout)  # type: ignore[no-any-return]
    except FutureTimeout:
        raise TimeoutError(f"no result within {timeout} s") from None
    except JobFailed as failed:
        return failed_chunk_values(failed, size, return_exceptions)


def failed_chunk_values(failed: JobFailed, size: int, return_exceptions: bool) -> Iterable[Any]:
    """What a failed map chunk yields: the failure for each of its `size`
    items if it failed as a whole, else its items up to the first failure."""
    if failed.items is None:  # the chunk failed as a whole: every item did
        if not return_exceptions:
            raise failed
        return [failed] * size
    return item_values(failed.items, return_exceptions)


def item_values(items: list[list[Any]], return_exceptions: bool) -> Iterator[Any]:
    for ok, value in items:
        if ok:
            yield value
        elif return_exceptions:
            yield JobFailed(value)
        else:
            raise JobFailed(value) from None
