"""User values (arguments, results, exception args) as the wire carries them.

msgpack alone would turn a tuple into a list and refuse an int outside 64
bits. Here a tuple travels as extension type TUPLE and such an int as
BIGINT (the codes are in exttypes.py), at any depth, so that what a task
is given and what it returns arrive as they were sent: a tuple stays a
tuple, a list stays a list.

Rules:
1. Only the two ends of a job decode user values: the client and the
   pool process. The broker and a worker's main process see extension
   values as opaque `msgpack.ExtType` and pass them on.
2. A value that holds no tuple and no big int travels as plain msgpack,
   exactly as before. One that does travels as a single extension value
   at the top (`wire_value`), so a receiver finds it without walking the
   value: a job's arguments as PACKED_ARRAY, anything else as
   PACKED_VALUE (or TUPLE/BIGINT when that is all it is).
3. Decoding never raises anything but ProtocolError, whatever the bytes,
   and never nests deeper than MAX_EXT_DEPTH extension values.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import ProtocolError
from .exttypes import BIGINT, MAX_EXT_DEPTH, NAMES, PACKED_ARRAY, PACKED_VALUE, TUPLE

_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


def _encode_ext(obj: Any) -> Any:
    """msgpack's `default` hook: what plain msgpack has no exact type for.

    With `strict_types`, subclasses land here too (an IntEnum, an
    OrderedDict, a namedtuple); they travel as their base type.
    """
    if isinstance(obj, tuple):
        return msgpack.ExtType(TUPLE, pack_value(list(obj)))
    if isinstance(obj, int) and not isinstance(obj, bool):
        value = int(obj)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        return msgpack.ExtType(BIGINT, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))
    bases: tuple[type[Any], ...] = (dict, list, str, bytes, float)
    for base in bases:
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


def pack_value(value: Any) -> bytes:
    """`value` packed, tuples and big ints as extension values.

    Raises:
        Exception: whatever msgpack raises for what it cannot encode.
    """
    return msgpack.packb(value, use_bin_type=True, strict_types=True, default=_encode_ext)  # type: ignore[no-any-return]


def is_plain(value: Any) -> bool:
    """True if plain msgpack carries `value` exactly (no tuple, no big int,
    no subclass anywhere in it)."""
    try:
        msgpack.packb(value, use_bin_type=True, strict_types=True)
    except Exception:
        return False
    return True


def wire_value(value: Any) -> Any:
    """`value` as one wire value: itself when plain, else one extension value.

    Raises:
        Exception: whatever msgpack raises for what it cannot encode.
    """
    if is_plain(value):
        return value
    if type(value) is tuple:
        return msgpack.ExtType(TUPLE, pack_value(list(value)))
    return msgpack.ExtType(PACKED_VALUE, pack_value(value))


def wire_args(args: list[Any]) -> list[Any] | msgpack.ExtType:
    """A job's positional arguments: the list when plain, else one packed array.

    Raises:
        Exception: whatever msgpack raises for what it cannot encode.
    """
    if is_plain(args):
        return args
    return msgpack.ExtType(PACKED_ARRAY, pack_value(args))


def wire_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments with each value as `wire_value` makes it."""
    if not kwargs or is_plain(kwargs):
        return kwargs
    return {key: wire_value(value) for key, value in kwargs.items()}


class _Decoder:
    """msgpack's `ext_hook`, counting how deep extension values nest."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0

    def __call__(self, code: int, data: bytes) -> Any:
        if code == BIGINT:
            if not data:
                raise ProtocolError("empty big integer")
            return int.from_bytes(data, "big", signed=True)
        if code not in NAMES:
            raise ProtocolError(f"unknown msgpack extension type {code}")
        if self.depth >= MAX_EXT_DEPTH:
            raise ProtocolError(f"values nest more than {MAX_EXT_DEPTH} extension values deep")
        self.depth += 1
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=self)
        finally:
            self.depth -= 1
        if code == PACKED_VALUE:
            return value
        if type(value) is not list:
            raise ProtocolError(f"invalid {NAMES[code]}: not an array")
        return tuple(value) if code == TUPLE else value


def unpack_value(data: bytes | memoryview) -> Any:
    """Packed user-value bytes as a Python value.

    Raises:
        ProtocolError: not exactly one valid value.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_Decoder())
    except ProtocolError:
        raise
    except Exception as exc:  # unpackb raises outside msgpack's own classes too
        raise ProtocolError(f"invalid value: {exc}") from exc


def from_wire_value(value: Any) -> Any:
    """A value as the wire carried it, as the Python value it stands for:
    plain values as they are, an extension value decoded.

    Raises:
        ProtocolError: an extension value that is not a valid one.
    """
    if type(value) is not msgpack.ExtType:
        return value
    try:
        return _Decoder()(value.code, value.data)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"invalid {NAMES.get(value.code, 'extension value')}: {exc}") from exc


def from_wire_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments as `wire_kwargs` sent them.

    Raises:
        ProtocolError: a value that is not a valid extension value.
    """
    for value in kwargs.values():
        if type(value) is msgpack.ExtType:
            return {key: from_wire_value(v) for key, v in kwargs.items()}
    return kwargs


def from_wire_error(error: Any) -> Any:
    """An error map with its `args` decoded, and each value of its `items`
    (a map chunk's outcome per item, see worker/runner.py).

    Raises:
        ProtocolError: one of them is not a valid extension value.
    """
    if not isinstance(error, dict):
        return error
    decoded = error
    if type(error.get("args")) is msgpack.ExtType:
        decoded = {**error, "args": from_wire_value(error["args"])}
    items = error.get("items")
    if type(items) is list:
        decoded = {**decoded, "items": [
            [item[0], from_wire_value(item[1]) if item[0] else from_wire_error(item[1])]
            if type(item) is list and len(item) == 2 else item
            for item in items
        ]}
    return decoded
