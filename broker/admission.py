"""What the broker refuses from one job or result, alone, before keeping it.

The decoder (protocol/limits.py) already closed any connection whose
frame broke the wire's rules. What is left here are values that are fine
on the wire but that the broker could not pass on: a job whose arguments
would not fit a worker's frame once re-encoded, values nested deeper than
MAX_NESTING, an error message of a megabyte. Each costs only its own job
(refused at submit, or failed with a reason), never the connection it
came on, another client's jobs or the worker it would have gone to.

Pure functions, no state: `BrokerState` calls them.
"""

from __future__ import annotations

from typing import Any

import msgpack

from sockpool.protocol.errors import ProtocolError
from sockpool.protocol.exttypes import PACKED_VALUE
from sockpool.protocol.framing import pack_body
from sockpool.protocol.limits import (
    CONTAINERS,
    INT64_MAX,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_NESTING,
    MAX_TRACEBACK_CHARS,
    container_items,
    cut,
    too_deep,
)
from sockpool.protocol.messages import E_UNENCODABLE_ARGUMENTS, error_value
from sockpool.protocol.packed import pack_array

__all__ = ["any_nested_value", "checked_result", "too_deep", "too_large_to_forward", "unfit_jobs"]

E_TOO_LARGE = "ArgumentsTooLarge"
E_TOO_DEEP = "ArgumentsTooDeep"
E_RESULT_TOO_DEEP = "ResultTooDeep"

# A `jobs` frame's bytes besides its entries: the map, its keys, the array header.
_JOBS_OVERHEAD_BYTES = 32
# msgpack writes a float32 in 5 bytes; decoded, it is a Python float, which
# goes on as a float64 in 9. Nothing else grows when re-encoded.
_GROWTH_NUM, _GROWTH_DEN = 9, 5
# A frame this large has its jobs' long argument lists packed (see unfit_jobs).
PACK_ARGS_FRAME_BYTES = 64 * 1024
PACK_ARGS_MIN_ITEMS = 16
# A job goes on under the broker's id, which may take 9 bytes where the
# client's took 1.
_ID_GROWTH_BYTES = 8


def unfit_jobs(jobs: list[list[Any]], frame_bytes: int, max_frame_bytes: int) -> dict[int, dict[str, Any]]:
    """The refusal for each job of a submit that could not go on to a worker,
    by client job id; empty (the usual case) when all of them can.

    In a large frame, a job's long argument list is packed here, in place
    (`entry[2]` becomes a packed array, which the pool process unpacks as it
    does a map chunk's), and so is each long list or map among its keyword
    arguments (a packed value): the broker then holds them as the bytes it
    will send, not as Python objects that can take 70 times as much (a
    million empty maps are a megabyte on the wire, 64 MB decoded).

    Cheap for the usual frame: one walk over the batch for nesting, and
    single jobs re-encoded only in a frame large enough that one of them
    might cost real memory or outgrow a worker's frame.
    """
    refused: dict[int, dict[str, Any]] = {}
    if any_nested(jobs):
        for entry in jobs:
            if too_deep(entry, MAX_NESTING + 1):
                refused[entry[0]] = error_value(
                    E_TOO_DEEP, f"the job's arguments nest more than {MAX_NESTING} levels deep"
                )
    worst = frame_bytes * _GROWTH_NUM // _GROWTH_DEN + _ID_GROWTH_BYTES * len(jobs) + _JOBS_OVERHEAD_BYTES
    check_size = worst > max_frame_bytes
    if frame_bytes < PACK_ARGS_FRAME_BYTES and not check_size:
        return refused
    for entry in jobs:
        if entry[0] in refused:
            continue
        args = entry[2]
        if type(args) is list and _worth_packing(args):
            packed = pack_array(args, checked=True)
            if isinstance(packed, list):
                refused[entry[0]] = error_value(E_UNENCODABLE_ARGUMENTS, "the broker cannot encode the job's arguments")
                continue
            entry[2] = packed
        kwargs = entry[3]
        if kwargs and any(_worth_packing(v) for v in kwargs.values()):
            entry[3] = _packed_kwargs(kwargs)
        if not check_size:
            continue
        try:
            size = len(pack_body([INT64_MAX, *entry[1:]])) + _JOBS_OVERHEAD_BYTES
        except ProtocolError as exc:
            refused[entry[0]] = error_value(E_UNENCODABLE_ARGUMENTS, f"the broker cannot encode the job: {exc}")
            continue
        if size > max_frame_bytes:
            refused[entry[0]] = error_value(
                E_TOO_LARGE,
                f"the job takes {size} bytes as the broker sends it on to a worker, over the frame limit of "
                f"{max_frame_bytes} (float32 values travel on as float64; send large arrays as bytes)",
            )
    return refused


def _packed_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments with each long list or map value packed, as a
    client packs a value holding tuples (the pool process decodes both)."""
    return {
        key: msgpack.ExtType(PACKED_VALUE, msgpack.packb(value, use_bin_type=True))
        if _worth_packing(value) else value
        for key, value in kwargs.items()
    }


def _worth_packing(value: Any) -> bool:
    """A list or map long enough, or holding containers, that it costs the
    broker far more decoded than packed."""
    items = container_items(value)
    if items is None:
        return False
    return len(value) >= PACK_ARGS_MIN_ITEMS or any(type(item) in CONTAINERS for item in items)


def any_nested(entries: list[list[Any]]) -> bool:
    """Whether any job's arguments, keyword arguments or options hold a list
    or map at all: the only jobs whose nesting needs a walk. One tight loop,
    no call per job, for the usual batch of flat arguments."""
    containers = CONTAINERS
    for entry in entries:
        args = entry[2]
        if type(args) is list:
            for arg in args:
                if type(arg) in containers:
                    return True
        kwargs = entry[3]
        if kwargs:
            for value in kwargs.values():
                if type(value) in containers:
                    return True
        if len(entry) > 5:
            for value in entry[5].values():
                if type(value) in containers:
                    return True
    return False


def any_nested_value(results: list[list[Any]]) -> bool:
    """Whether any result's value is a list or map, the only ones whose
    nesting needs a walk (a map chunk's values come packed)."""
    containers = CONTAINERS
    for entry in results:
        if type(entry[2]) in containers:
            return True
    return False


def too_large_to_forward(max_frame_bytes: int) -> dict[str, Any]:
    """The failure of a job that turned out too large to send to a worker."""
    return error_value(E_TOO_LARGE, f"the job is too large to send to a worker within {max_frame_bytes} bytes")


def checked_result(ok: bool, value: Any) -> tuple[bool, Any]:
    """A worker's result as the broker keeps it: too deep to pass on
    becomes a failure; an error's message and traceback are cut to bounds."""
    if too_deep(value):
        return False, error_value(E_RESULT_TOO_DEEP, f"the result nests more than {MAX_NESTING} levels deep")
    if ok:
        return ok, value
    message, traceback = value.get("message", ""), value.get("traceback", "")
    if len(message) > MAX_ERROR_MESSAGE_CHARS or len(traceback) > MAX_TRACEBACK_CHARS:
        value = {
            **value,
            "message": cut(message, MAX_ERROR_MESSAGE_CHARS),
            "traceback": cut(traceback, MAX_TRACEBACK_CHARS),
        }
    return ok, value


def bounded_failure(
    args: Any, kwargs: dict[str, Any], error: Any, limit: int
) -> tuple[Any, dict[str, Any], Any, int]:
    """What the broker keeps of a failed job for `broker failed`: its
    arguments and error while they fit `limit` bytes as a row, else a note
    of what was dropped. Returns (args, kwargs, error, row bytes).

    The submitter got the whole error with its result; this is the record
    kept for a week, shown to the operator.
    """
    size = _row_bytes(args, kwargs, error)
    if size <= limit:
        return args, kwargs, error, size
    args, kwargs = [f"<arguments of about {size} bytes not kept>"], {}
    size = _row_bytes(args, kwargs, error)
    if size <= limit or not isinstance(error, dict):
        return args, kwargs, error, size
    error = {
        "type": cut(str(error.get("type", "Error")), 200),
        "message": cut(str(error.get("message", "")), 1000),
        "traceback": cut(str(error.get("traceback", "")), 4000),
    }
    return args, kwargs, error, _row_bytes(args, kwargs, error)


def _row_bytes(args: Any, kwargs: dict[str, Any], error: Any) -> int:
    # The row's other fields (task, attempts, time) are bounded and small.
    try:
        return len(pack_body([args, kwargs, error])) + 64 + 3 * 256
    except ProtocolError:
        return 1 << 62


def fit_status(status: dict[str, Any], budget: int) -> dict[str, Any]:
    """`status` cut until it encodes in `budget` bytes, so a status reply
    always fits a frame: first the schedules, then the recent failures,
    the tasks waiting for a worker, the per-task counts, the per-queue rows,
    then the worker list (each cut says so, with `truncated`; what was
    empty is not listed).

    Every part is bounded already (names, messages, tracked tasks), so at
    the default frame size nothing is ever cut; a broker run with a small
    --max-frame-bytes and many workers still answers.
    """
    if len(pack_body(status)) <= budget:
        return status
    status = {**status, "truncated": []}
    # Schedules have `schedule list`, a page of their own; the per-queue
    # rows go last of these, being what an operator looks at first.
    for key, empty in (("schedules", []), ("recent_failures", []), ("unserved", []), ("tasks", {}), ("queues", {})):
        if not status.get(key):
            continue  # nothing to cut: say nothing about it
        status[key] = empty
        status["truncated"].append(key)
        if len(pack_body(status)) <= budget:
            return status
    workers = status["workers"]
    status["truncated"].append("workers")
    while workers:
        workers = workers[: len(workers) // 2]
        status["workers"] = workers
        if len(pack_body(status)) <= budget:
            break
    return status
