"""What a well-formed message field, job entry, result entry and job option is.

`messages.from_wire` builds a message from a decoded map, checking each
field's type and range as it goes, then runs the message's own check
here (`CHECKS_BY_TAG`: the entries of a batch, the options of each job,
the names a worker sends). Anything out of bounds is a ProtocolError
for the peer that sent it. The bounds themselves are protocol/limits.py's,
and those of the job options (queue names, priorities, keys) are here.

Pure and cheap: it reads values, never copies or walks them past what it
checks (never repr(), which recurses on deeply nested input), and imports
nothing from messages.py, which imports it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .defaults import MAX_JOBS_PER_FRAME
from .errors import ProtocolError
from .limits import (
    MAX_RETRIES,
    MAX_TASK_NAME_CHARS,
    MAX_TASKS_PER_WORKER,
    MAX_TIMEOUT_S,
    bad_error_value,
    int64,
)
from .packed import is_array

# Queue names: short and printable, so they are safe as metric labels and
# in logs; a client cannot grow the broker's tables with megabyte names.
MAX_QUEUE_NAME_CHARS = 64
QUEUE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")
DEFAULT_QUEUE = "default"
# A worker listens on at most this many queues.
MAX_WORKER_QUEUES = 64
# Priorities: higher runs first; the range keeps them plain small integers.
MIN_PRIORITY = -1000
MAX_PRIORITY = 1000
# The `result` job option: who wants the result.
RESULT_DETACHED = "detached"  # kept until acknowledged or its TTL, whatever the session does
RESULT_NONE = "none"  # fire and forget: the broker keeps no result, only a failure record
RESULT_MODES = (RESULT_DETACHED, RESULT_NONE)
# Unique keys and limit keys are names, not payloads.
MAX_KEY_CHARS = 256
MAX_LIMIT = 1_000_000

def check_job(entry: Any) -> None:
    """Raises ProtocolError unless `entry` is a well-formed job entry."""
    if not (
        isinstance(entry, list)
        and 5 <= len(entry) <= 6
        and type(entry[0]) is int
        and -(2**63) <= entry[0] < 2**63
        and type(entry[1]) is str
        and len(entry[1]) <= MAX_TASK_NAME_CHARS
        and is_array(entry[2])
        and type(entry[3]) is dict
        and type(entry[4]) is bool
        and (len(entry) == 5 or _valid_options(entry[5]))
    ):
        raise ProtocolError(f"malformed job entry ({_shape(entry)})")


def _shape(entry: Any) -> str:
    """A short description of a bad entry; never repr(), which recurses
    without bound on deeply nested input."""
    if isinstance(entry, list):
        return f"list of {len(entry)}: " + ", ".join(type(e).__name__ for e in entry[:6])
    return type(entry).__name__


def _valid_options(options: Any) -> bool:
    if type(options) is not dict:
        return False
    timeout = options.get("timeout")
    retries = options.get("retries", 0)
    limit = options.get("limit")
    queue = options.get("queue", DEFAULT_QUEUE)
    priority = options.get("priority", 0)
    delay = options.get("delay", 0)
    at = options.get("at", 0)
    # `not timeout <= MAX`, not `timeout > MAX`: NaN compares false both ways.
    return (
        (timeout is None or (type(timeout) in (int, float) and 0 < timeout <= MAX_TIMEOUT_S))
        and (type(retries) is int and 0 <= retries <= MAX_RETRIES)
        and options.get("result") in _RESULT_VALUES
        and _valid_name(options.get("key"))
        and _valid_name(options.get("limit_key"))
        and (limit is None or (type(limit) is int and 1 <= limit <= MAX_LIMIT))
        and valid_queue_name(queue)
        and type(priority) is int and MIN_PRIORITY <= priority <= MAX_PRIORITY
        and type(delay) in (int, float) and math.isfinite(delay) and delay >= 0
        and type(at) in (int, float) and math.isfinite(at)
    )


_RESULT_VALUES = frozenset({None, *RESULT_MODES})


def _valid_name(value: Any) -> bool:
    return value is None or (type(value) is str and 0 < len(value) <= MAX_KEY_CHARS)


def valid_queue_name(name: Any) -> bool:
    """1 to MAX_QUEUE_NAME_CHARS of letters, digits and `_.:-`."""
    return type(name) is str and 0 < len(name) <= MAX_QUEUE_NAME_CHARS and QUEUE_NAME_CHARS.issuperset(name)


def check_result(entry: Any) -> None:
    """Raises ProtocolError unless `entry` is a well-formed result entry."""
    if not (
        isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is int and type(entry[1]) is bool
        and -(2**63) <= entry[0] < 2**63
    ):
        raise ProtocolError(f"malformed result entry ({_shape(entry)})")
    if not entry[1]:
        problem = bad_error_value(entry[2])
        if problem is not None:
            raise ProtocolError(f"malformed result entry: {problem}")


def _check_jobs(msg: Any) -> None:
    for entry in msg.jobs:
        check_job(entry)


def _check_jobs_to_run(msg: Any) -> None:
    _check_jobs(msg)
    if msg.holders and not _all_int64(msg.holders):
        raise ProtocolError("jobs: holders must be integers (64-bit)")
    for pair in msg.after:
        if type(pair) is not list or len(pair) != 2 or not _all_int64(pair):
            raise ProtocolError("jobs: after must be [id, predecessor id] pairs of integers")


def _check_submit(msg: Any) -> None:
    # Each job costs the broker a few hundred bytes however few it took on
    # the wire; clients split their batches at this many (client/link.py).
    if len(msg.jobs) > MAX_JOBS_PER_FRAME:
        raise ProtocolError(f"submit: more than {MAX_JOBS_PER_FRAME} jobs in one frame")
    _check_jobs(msg)


def _check_results(msg: Any) -> None:
    for entry in msg.results:
        check_result(entry)


def _all_int64(values: list[Any]) -> bool:
    return all(type(i) is int and int64(i) for i in values)


def _check_ids(msg: Any) -> None:
    if not _all_int64(msg.ids):
        raise ProtocolError(f"{msg.type}: ids must be integers (64-bit)")


def _check_ping(msg: Any) -> None:
    if not _all_int64(msg.running):
        raise ProtocolError("ping: running must be integers (64-bit)")


def _check_hello(msg: Any) -> None:
    _check_task_names(msg)
    if len(msg.queues) > MAX_WORKER_QUEUES or not all(valid_queue_name(q) for q in msg.queues):
        raise ProtocolError(
            f"hello: queues must be at most {MAX_WORKER_QUEUES} names of 1 to {MAX_QUEUE_NAME_CHARS} "
            "letters, digits and _.:-"
        )


def _check_task_names(msg: Any) -> None:
    if len(msg.tasks) > MAX_TASKS_PER_WORKER:
        raise ProtocolError(f"{msg.type}: more than {MAX_TASKS_PER_WORKER} task names")
    if not all(type(t) is str and len(t) <= MAX_TASK_NAME_CHARS for t in msg.tasks):
        raise ProtocolError(f"{msg.type}: tasks must be strings of at most {MAX_TASK_NAME_CHARS} characters")


def _check_control(msg: Any) -> None:
    if len(msg.op) > 64:
        raise ProtocolError("control: op too long")


# The check each message runs once its fields are in, by wire tag
# (messages.py maps them to its classes; control.py adds its own).
CHECKS_BY_TAG: dict[str, Callable[[Any], None]] = {
    "submit": _check_submit,
    "jobs": _check_jobs_to_run,
    "results": _check_results,
    "hello": _check_hello,
    "tasks": _check_task_names,
    "release": _check_ids,
    "ack": _check_ids,
    "started": _check_ids,
    "ping": _check_ping,
    "control": _check_control,
}
