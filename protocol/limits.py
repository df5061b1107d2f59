"""What a peer may send: the bounds every decoded message is checked against.

Everything a peer sends is checked here, at the protocol boundary, before
the broker's core, its store or an encoder sees it. A value out of these
bounds is a `ProtocolError` for the peer that sent it (its connection is
closed), except where one job or result alone can be failed instead (see
`too_deep`), so that one bad value never costs other jobs.

Rules:
1. Every integer on the wire fits a signed 64-bit field (SQLite's INTEGER,
   msgpack's int64), unless a field names a narrower range below. msgpack
   itself decodes up to 2**64-1, which SQLite cannot store.
2. Every string and list a peer names, and which the broker keeps, has a
   length bound: a name, a session ID, a task list.
3. Values nest at most MAX_NESTING deep. msgpack's decoder allows about
   1,000 levels, its encoder (in some versions) only 511, and a value the
   broker decoded but cannot encode again would fail wherever it goes next:
   the store, a worker's frame. The bound is ours, whatever msgpack does.
4. The checks are cheap: they read what the broker touches anyway, and walk
   a value only for its containers (a list of a million numbers is one
   pass in a tight loop; a packed array is opaque and not walked at all).
"""

from __future__ import annotations

from typing import Any, Iterable

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Pool processes one worker may announce; their sum over all workers must
# still fit the welcome's integer.
MAX_PROCESSES = 4096
# Credit one message may grant (a worker's window is far smaller).
MAX_CREDIT = 1 << 24
# Retries a job may ask for.
MAX_RETRIES = 100
# The longest run a job may ask for: 30 days. `inf` is not a timeout.
MAX_TIMEOUT_S = 30 * 24 * 3600.0

# Lengths, in characters, of the strings the broker keeps and shows.
MAX_NAME_CHARS = 128          # hello.name: a worker's or client's name
MAX_SESSION_CHARS = 128       # a session ID
MAX_TASK_NAME_CHARS = 256     # a dotted import path
# Task names one worker may serve.
MAX_TASKS_PER_WORKER = 10_000
# An error's message and traceback as a worker reports them; longer ones
# are cut (not refused): a task may raise with any message it likes.
MAX_ERROR_MESSAGE_CHARS = 4000
MAX_TRACEBACK_CHARS = 16_000

MAX_NESTING = 100

# The types a decoded value nests in (msgpack arrays and maps).
CONTAINERS = (list, dict)


def int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def container_items(value: Any) -> Iterable[Any] | None:
    """The items a list or map holds (a map's values), or None if `value`
    is neither: not a subclass, the exact types msgpack decodes to."""
    kind = type(value)
    if kind is list:
        as_list: list[Any] = value
        return as_list
    if kind is dict:
        as_map: dict[Any, Any] = value
        return as_map.values()
    return None


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """True if lists and maps in `value` nest more than `limit` deep.

    Only containers are descended into; a flat list costs one loop over its
    items, and scalars and packed arrays (msgpack ExtType) cost nothing.
    """
    items = container_items(value)
    if items is None:
        return False
    if limit <= 0:
        return True
    for item in items:
        if type(item) in CONTAINERS and too_deep(item, limit - 1):
            return True
    return False


def bad_error_value(value: Any) -> str | None:
    """Why a failed result's value is malformed, or None if it is well formed.

    A worker reports a failure as a map of strings (see `error_value`); the
    broker reads its `type` to decide on a retry, and shows its message.
    """
    if type(value) is not dict:
        return "an error must be a map"
    for key in ("type", "message", "traceback"):
        if key in value and type(value[key]) is not str:
            return f"an error's {key!r} must be a string"
    items = value.get("items")
    if items is not None and type(items) is not list:
        return "an error's 'items' must be a list"
    return None


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def loggable(text: str, limit: int = 200) -> str:
    """A peer's text as it may appear in our log: control characters
    escaped (a newline in a name must not forge a log line), and cut."""
    return cut(text, limit).translate(_CONTROL)


def cut(text: str, limit: int) -> str:
    """`text` at most `limit` characters long, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 40)] + f"... [{len(text) - limit + 40} characters cut]"
