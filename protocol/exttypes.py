"""The msgpack extension types sockpool puts on the wire: one registry.

Every extension code any part of sockpool sends is defined here and
nowhere else, so that two features can never claim the same code. The
meaning of each, for other implementations, is in docs/PROTOCOL.md
("Values").

| code | name           | data                                  | means            |
|------|----------------|---------------------------------------|------------------|
| 1    | PACKED_ARRAY   | exactly one packed msgpack array      | that array       |
| 2    | TUPLE          | exactly one packed msgpack array      | a tuple of it    |
| 3    | BIGINT         | two's-complement big-endian bytes     | an int           |
| 4    | PACKED_VALUE   | exactly one packed msgpack value      | that value       |

The broker and a worker's main process never decode any of them: they
carry user values as they came. Only the two ends (the client and the
pool process running the job) turn them into Python values (values.py).
"""

from __future__ import annotations

PACKED_ARRAY = 1
TUPLE = 2
BIGINT = 3
PACKED_VALUE = 4

NAMES = {PACKED_ARRAY: "packed array", TUPLE: "tuple", BIGINT: "big integer", PACKED_VALUE: "packed value"}

# Extension values nest (a tuple in a tuple is one inside the other's
# data), and each level is decoded by a nested msgpack call that keeps a
# 32 KiB parse stack on the C stack. Past this depth a value is refused
# instead of risking a thread's stack; a list or dict adds no level.
MAX_EXT_DEPTH = 32
