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

# A peer that has not finished its handshake (TLS, hello, authentication)
# by then is cut off, however slowly it keeps sending.
HANDSHAKE_TIMEOUT_S = 10.0
# Frames before the handshake completes are small, and a stranger must
# not make the broker buffer, or decode, more than a few KiB: what the
# broker holds for a peer not yet authenticated is this, whatever it sends.
# A worker whose task names do not fit sends them after its welcome, in
# `tasks` messages (see docs/PROTOCOL.md).
HANDSHAKE_MAX_FRAME_BYTES = 4 * 1024

# Connections the broker serves at once, admitted or not; more are accepted
# and closed at once, so a flood costs a socket each, not a thread each.
MAX_CONNECTIONS = 1024
# Encoded messages queued for one peer that does not read them; over this
# the broker drops that peer rather than grow without bound.
MAX_OUTBOX_BYTES = 64 * 1024 * 1024

# Authentication: a file holding the shared secret (see SECURITY.md).
SECRET_ENV = "SOCKPOOL_SECRET_FILE"
# The operator's secret, for `broker failed` (falls back to SECRET_ENV).
OPERATOR_SECRET_ENV = "SOCKPOOL_OPERATOR_SECRET_FILE"
# Shorter secrets are refused: a guessable secret protects nothing. The peer
# proves first, so whoever it connects to (a fake broker, without TLS) gets
# one MAC to guess the secret against offline: only a generated secret
# (`secrets.token_hex(32)`, 256 bits) makes that hopeless. 32 characters is
# the floor; length cannot tell a generated secret from a passphrase.
MIN_SECRET_BYTES = 32
# TLS: the CA certificate that peers verify the broker's certificate with.
TLS_CA_ENV = "SOCKPOOL_TLS_CA"

# How long a client waits to connect before giving up.
CONNECT_TIMEOUT_S = 10.0
# How long a client that lost its broker keeps trying to reconnect.
RECONNECT_TIMEOUT_S = 120.0

# Worker reconnect backoff: starts small, doubles, capped, with jitter.
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0

# How much work a worker keeps queued locally beyond what its processes are
# running, measured in seconds of estimated work rather than in jobs: enough
# to hide a network round trip for tiny jobs, never enough to hoard long ones.
# It is also how long another client's job (or an urgent one) can wait behind
# what a worker already took: the broker's fair share and priorities order
# only what it still holds. 20 ms is still 20 round trips of loopback.
PREFETCH_TARGET_S = 0.02
# Upper bound on a worker's credit window, whatever the estimate says.
MAX_CREDIT_PER_PROCESS = 4096

# How long a chunk handed to one pool process should take, in seconds.
CHUNK_TARGET_S = 0.01

# Client.map: cap on items per chunk and on chunks in flight per map call.
MAX_MAP_CHUNK = 4096
MAP_WINDOW_CHUNKS = 16

# A client sends large jobs in submit frames of about this many bytes (a
# larger job in a frame of its own): the broker starts on one frame while
# the next is on the wire, and never waits for a whole 16 MiB frame.
SUBMIT_FRAME_BYTES = 1024 * 1024
# A single outgoing frame is split before it reaches this many jobs.
MAX_JOBS_PER_FRAME = 10_000
# Client flow control: `submit` blocks while this many jobs are queued or
# sent but not yet accepted by the broker (a map chunk counts as one job).
MAX_PENDING_JOBS = 10_000

# Heartbeats: both sides ping this often; HEARTBEAT_MISSES intervals of
# silence mean the peer is gone (its jobs are requeued, or we reconnect).
HEARTBEAT_S = 2.0
HEARTBEAT_MISSES = 4

# Retries: the n-th retry waits RETRY_BASE_S * 2**(n-1), at most RETRY_MAX_S,
# times a random factor in [0.5, 1.5] so that retries do not stampede.
RETRY_BASE_S = 0.2
RETRY_MAX_S = 60.0

# A job whose worker died while running it this many times is a poison job.
MAX_LOST_ATTEMPTS = 3
# A job requeued this many times because its worker was lost, running or
# not, fails too: a backstop for jobs that kill workers before they report.
MAX_REQUEUES = 20

# Quotas (broker/quota.py; 0 means none). By default only the bytes all
# queued jobs may take, counting a fixed overhead per job, so that clients
# together cannot make the broker run out of memory; a shared broker sets
# per-session limits too.
MAX_QUEUED_JOBS = 0
MAX_STORE_BYTES = 1 << 30
MAX_SESSION_JOBS = 0
MAX_SESSION_BYTES = 0

# A job whose task no connected worker serves fails with UnknownTask once
# its task has had no server for UNSERVED_GRACE_S since it was submitted
# and since the last worker joined, or for UNSERVED_TIMEOUT_S in all
# (with no worker connected at all, only the latter applies). See
# broker/unserved.py.
UNSERVED_GRACE_S = 10.0
UNSERVED_TIMEOUT_S = 600.0

# A client session gone this long (closed, or lost and not back) cannot
# return for its results: longer than a client keeps reconnecting
# (RECONNECT_TIMEOUT_S). Its results are then dropped, unless its jobs were
# submitted detached (kept until acknowledged or RESULT_TTL_S).
SESSION_GRACE_S = 300.0

# How long results and failed jobs are kept when nobody acknowledges them.
RESULT_TTL_S = 7 * 24 * 3600.0

# A stopping worker finishes running jobs for at most this long.
DRAIN_TIMEOUT_S = 30.0

# Broker status, /metrics and the dashboard: throughput is completed calls
# over the last THROUGHPUT_WINDOW_S seconds, the dashboard's chart covers
# STATUS_HISTORY_S, and the newest RECENT_FAILURES failures are kept.
THROUGHPUT_WINDOW_S = 10
STATUS_HISTORY_S = 300
RECENT_FAILURES = 20
# A failed job kept for `broker failed` takes at most this much (its
# arguments and an error's per-item details are dropped past it), so that
# pages of the list fit a frame and a few failures cannot fill memory.
FAILED_ROW_MAX_BYTES = 64 * 1024
# Per-task counts beyond this many task names are summed under one name,
# so a client naming random tasks cannot grow the broker's tables (or the
# metrics' label sets) without bound.
MAX_TRACKED_TASKS = 1000
# `submit` draws a progress bar for at least this many jobs when stdout is
# a terminal (`--progress` / `--no-progress` override).
PROGRESS_MIN_JOBS = 1000

# High availability (a broker on a PostgreSQL store, broker/store/postgres.py).
# The active broker renews its lease every LEASE_RENEW_S; it serves only
# within LEASE_VALID_S of the start of its last successful renewal, and the
# database lets a standby take over LEASE_TTL_S after that renewal. The gap
# between the two is the margin that keeps an old leader silent before a new
# one speaks. A standby looks for an expired lease every LEASE_POLL_S.
LEASE_RENEW_S = 0.5
LEASE_VALID_S = 2.0
LEASE_TTL_S = 2.5
LEASE_POLL_S = 0.2
# Clients and workers that find only standbys (a failover under way) retry
# at most this far apart instead of RECONNECT_MAX_S.
STANDBY_RETRY_MAX_S = 0.5
