"""Every tunable default of sockpool, in one place.

Units are in the names. Command-line options and constructor arguments
default to these; nothing else in the tree hard-codes a number that a user
might want to change.
"""

DEFAULT_HOST = "127.0.0.1"
# A port nothing common uses; `SOCKPOOL_BROKER` or `--broker` override it.
DEFAULT_PORT = 7341
BROKER_ENV = "SOCKPOOL_BROKER"

# Checked against the 4-byte length prefix before any body is buffered.
MAX_FRAME_BYTES = 16 * 1024 * 1024

# A peer that has not finished its hello by then is cut off.
HANDSHAKE_TIMEOUT_S = 10.0

# How long a client waits to connect before giving up (it retries meanwhile).
CONNECT_TIMEOUT_S = 10.0

# Worker reconnect backoff: starts small, doubles, capped, with jitter.
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0

# How much work a worker keeps queued locally beyond what its processes are
# running, measured in seconds of estimated work rather than in jobs: enough
# to hide a network round trip for tiny jobs, never enough to hoard long ones.
PREFETCH_TARGET_S = 0.05
# Upper bound on a worker's credit window, whatever the estimate says.
MAX_CREDIT_PER_PROCESS = 4096

# How long a chunk handed to one pool process should take, in seconds.
CHUNK_TARGET_S = 0.01

# Client.map: cap on items per chunk and on chunks in flight per map call.
MAX_MAP_CHUNK = 4096
MAP_WINDOW_CHUNKS = 16

# A single outgoing frame is split before it reaches this many jobs.
MAX_JOBS_PER_FRAME = 10_000

# `submit` draws a progress bar for at least this many jobs when stdout is
# a terminal (`--progress` / `--no-progress` override).
PROGRESS_MIN_JOBS = 1000
