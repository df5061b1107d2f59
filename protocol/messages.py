"""The messages of the sockpool wire protocol (spec: docs/PROTOCOL.md).

Every frame body is a msgpack map with a string `type` tag; each tag maps
to one frozen dataclass below. Optional fields have defaults, so a message
from an older peer that lacks them still decodes, and unknown keys are
ignored, so a newer peer may add fields without breaking us. What a
well-formed job or result entry, job option or name list is, validate.py says.

Jobs and results travel in batches: one `submit`, `jobs` or `results`
message carries many entries, each a short msgpack array, so the per-job
cost on the wire is a few bytes and no per-job frame.

    job entry:    [id: int, task: str, args: list, kwargs: map, many: bool, options: map]
    result entry: [id: int, ok: bool, value: any]

A map chunk's `args`, and its list of values, may travel as a packed array
(see `packed`), which no hop between client and pool process decodes.

The `options` element may be left off (an empty map). Known options:
`timeout` (seconds a run may take; the pool process is killed past it),
`retries` (further attempts after a failure, with backoff), `result`
("detached": kept for a session that may come back much later; "none":
fire and forget, the broker keeps no result, only a failure record),
`init` ([task, args]: run once per pool process before the first job
naming it), `key` (a unique key: see broker/keys.py), `limit_key` and
`limit` (a concurrency limit shared by jobs of that key: see
broker/limits.py), `queue` (the named queue, default "default"),
`priority` (an integer, higher first, default 0), `delay` (seconds from
acceptance before it may run) and `at` (Unix time before which it may not
run). The broker turns a `delay` into an `at` when it accepts the job, so
the due time survives a restart.

With `many` true, `args` is a list of single arguments and the task runs
once for each; the value is the list of their results (a chunk of a map).
A failed job's value is an error map, see `error_value`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

from .errors import ProtocolError
from .framing import frame, frame_parts, pack_body, prefix, unpack_body
from .limits import MAX_CREDIT, MAX_NAME_CHARS, MAX_PROCESSES, MAX_SESSION_CHARS
from .limits import MAX_RETRIES as MAX_RETRIES
from .packed import array_header
from .splice import SPLICE_BYTES, large_entry, pack_pieces
from .validate import CHECKS_BY_TAG

# Field validation lives in validate.py; what it defines that callers have
# always imported from here stays importable from here.
from .validate import (
    DEFAULT_QUEUE as DEFAULT_QUEUE,
    MAX_KEY_CHARS as MAX_KEY_CHARS,
    MAX_LIMIT as MAX_LIMIT,
    MAX_PRIORITY as MAX_PRIORITY,
    MAX_QUEUE_NAME_CHARS as MAX_QUEUE_NAME_CHARS,
    MAX_WORKER_QUEUES as MAX_WORKER_QUEUES,
    MIN_PRIORITY as MIN_PRIORITY,
    QUEUE_NAME_CHARS as QUEUE_NAME_CHARS,
    RESULT_DETACHED as RESULT_DETACHED,
    RESULT_MODES as RESULT_MODES,
    RESULT_NONE as RESULT_NONE,
    check_job as check_job,
    check_result as check_result,
    valid_queue_name as valid_queue_name,
)

PROTOCOL_VERSION = 1

ROLE_CLIENT = "client"
ROLE_WORKER = "worker"
# A client with the operator's rights: it sees every session's failed jobs
# (and, with later requests, may act on any job). It has a secret of its
# own (`--operator-secret-file`, by default the worker secret): see SECURITY.md.
ROLE_OPERATOR = "operator"
ROLES = (ROLE_CLIENT, ROLE_WORKER, ROLE_OPERATOR)

# Error codes carried by `error` messages and by failed results' `type`.
E_VERSION = "version_mismatch"
E_ROLE = "bad_role"
E_HANDSHAKE = "handshake"
E_BAD_MESSAGE = "bad_message"
E_FRAME_TOO_LARGE = "frame_too_large"
E_UNKNOWN_TASK = "UnknownTask"
N_UNSERVED = "unserved"  # a notice: jobs wait for a worker serving their task
E_AUTH = "auth_failed"
# A request only the operator role may make.
E_FORBIDDEN = "forbidden"
E_TLS = "tls"
# A standby broker (several on one PostgreSQL store): try the next address.
E_STANDBY = "standby"
E_TIMEOUT = "Timeout"
E_PROCESS_DIED = "WorkerProcessDied"
E_POISON = "PoisonJob"
E_UNENCODABLE_RESULT = "UnencodableResult"
E_UNENCODABLE_ARGUMENTS = "UnencodableArguments"
E_INITIALIZER_FAILED = "InitializerFailed"
# Submissions the broker refuses for now (the job is not accepted; submit
# it again later): it cannot write its journal, because the disk is full or
# for another reason it names.
E_DISK_FULL = "DiskFull"
E_STORE_FAILED = "StoreFailed"
# Refusals that say the broker takes no new jobs at the moment: the client
# raises them from a submit that would otherwise wait for room.
REFUSALS = frozenset({E_DISK_FULL, E_STORE_FAILED})
# Failures that another attempt cannot fix.
NOT_RETRYABLE = frozenset({E_UNKNOWN_TASK, E_UNENCODABLE_RESULT, E_UNENCODABLE_ARGUMENTS})

_registry: dict[str, type[Message]] = {}
_field_types: dict[type[Message], list[tuple[str, type, bool]]] = {}

M = TypeVar("M", bound="Message")


class Message:
    """Base of every wire message; `type` is the tag on the wire."""

    type: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": self.type}
        for name, _, _ in _field_types[type(self)]:
            wire[name] = getattr(self, name)
        return wire


@typing.dataclass_transform(frozen_default=True)
def _message(tag: str) -> Callable[[type[M]], type[M]]:
    def register(cls: type[M]) -> type[M]:
        cls = dataclass(frozen=True)(cls)
        cls.type = tag
        hints = typing.get_type_hints(cls)
        spec = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            base = typing.get_origin(hints[f.name]) or hints[f.name]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            spec.append((f.name, base, required))
        _field_types[cls] = spec
        _registry[tag] = cls
        return cls

    return register


@_message("hello")
class Hello(Message):
    """First message on every connection, from the connecting side."""

    version: int
    role: str
    name: str = ""
    # Clients: results follow the session, not the TCP connection.
    session: str = ""
    # Workers: the task names they serve and how many processes run them.
    tasks: list[str] = field(default_factory=list)
    processes: int = 0
    # With a secret: the peer's fresh random nonce (see protocol/auth.py).
    nonce: bytes = b""
    # Clients: send `started` notices for this session's jobs.
    started: bool = False
    # Workers: the queues they take jobs from, most preferred first; empty
    # means ["default"] (so a worker from before queues still works).
    queues: list[str] = field(default_factory=list)
    # Workers: they honour `jobs.after` (start a job only once another has
    # ended), so the broker may pass a limit's slot on at them. A worker
    # from before never gets `after`: it would start such a job at once.
    successors: bool = False


@_message("challenge")
class Challenge(Message):
    """Broker to peer, when the peer's role needs a secret: the broker's nonce."""

    nonce: bytes


@_message("auth")
class Auth(Message):
    """Peer to broker: the peer's proof that it knows the secret."""

    proof: bytes


@_message("welcome")
class Welcome(Message):
    """The broker's answer to an accepted hello."""

    version: int
    broker: str
    max_frame_bytes: int
    session: str = ""
    # Processes of all connected workers, a hint for sizing map chunks.
    processes: int = 0
    # After a challenge: the broker's proof that it knows the secret too.
    proof: bytes = b""
    # Both sides send `ping` this often; silence for HEARTBEAT_MISSES times
    # as long means the other side is gone.
    heartbeat_s: float = 0.0
    # Clients: jobs of this session the broker holds (queued, running, or
    # with a result not yet acknowledged), for re-attaching.
    jobs: int = 0


@_message("error")
class Error(Message):
    """A refusal. During the handshake it is followed by a close."""

    code: str
    message: str


@_message("notice")
class Notice(Message):
    """Broker to client: something the submitter should know that is not an
    error, such as a job waiting for a worker that serves its task
    (`code` "unserved"). For people: the client shows `message`."""

    code: str
    message: str


@_message("submit")
class Submit(Message):
    """Client to broker: a batch of jobs."""

    batch: int
    jobs: list[list[Any]]


@_message("accepted")
class Accepted(Message):
    """Broker to client: every job of that submit batch is queued."""

    batch: int
    count: int


@_message("started")
class Started(Message):
    """Broker to a client that asked for it (hello.started): these jobs of
    its session (client ids) were handed to a worker."""

    ids: list[int]


@_message("jobs")
class Jobs(Message):
    """Broker to worker: jobs to run, never more than the worker's credit.

    `holders`: ids of jobs here that hold a concurrency limit's slot (a job
    may be named to start after them). `after`: [id, predecessor id] pairs:
    the job starts only once its predecessor (held or run by this worker)
    has ended, and then holds its slot; if the predecessor goes back unrun,
    so does the job. Only to workers whose hello said `successors`.
    """

    jobs: list[list[Any]]
    holders: list[int] = field(default_factory=list)
    after: list[list[int]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        # Empty fields stay off the wire: the usual `jobs` is as before.
        wire: dict[str, Any] = {"type": self.type, "jobs": self.jobs}
        if self.holders:
            wire["holders"] = self.holders
        if self.after:
            wire["after"] = self.after
        return wire


@_message("results")
class Results(Message):
    """Worker to broker and broker to client: finished jobs.

    From a worker, `credit` grants the broker that many more jobs.
    """

    results: list[list[Any]]
    credit: int = 0


@_message("credit")
class Credit(Message):
    """Worker to broker: room for this many more jobs."""

    credit: int


@_message("tasks")
class Tasks(Message):
    """Worker to broker, after its welcome: more task names it serves.

    A hello must fit the few KiB a broker reads from a peer it has not yet
    authenticated; a worker serving more names sends them here instead,
    before its first credit.
    """

    tasks: list[str]


@_message("release")
class Release(Message):
    """Worker to broker: these jobs never started here; queue them again.

    A released job does not count as an attempt.
    """

    ids: list[int]


@_message("drain")
class Drain(Message):
    """Worker to broker: send no more jobs; the worker is shutting down."""


@_message("ack")
class Ack(Message):
    """Client to broker: these results arrived; the broker may forget them.

    With `all`, every result of the session delivered so far.
    """

    ids: list[int] = field(default_factory=list)
    all: bool = False


@_message("list_failed")
class ListFailed(Message):
    """Client to broker: which jobs failed for good (kept until their TTL).

    A client sees its own session's; the operator role sees every session's.
    The answer comes in pages that fit a frame: ask again from `offset`.
    """

    offset: int = 0


@_message("failed_jobs")
class FailedJobs(Message):
    """Broker to client: [task, args, kwargs, error, attempts, finished_at] each,
    from `offset` on; `more` if the next page starts at offset + len(jobs)."""

    jobs: list[list[Any]]
    offset: int = 0
    more: bool = False


@_message("status")
class StatusRequest(Message):
    """Client to broker: ask for a `status_reply`."""


@_message("status_reply")
class StatusReply(Message):
    """Broker to client: the broker's counts, as documented in `BrokerState.status`."""

    status: dict[str, Any]


@_message("control")
class Control(Message):
    """Client to broker: an operation on queues or schedules (see docs/PROTOCOL.md).

    `op` is one of pause_queue, resume_queue, schedule_add, schedule_list,
    schedule_remove, schedule_pause, schedule_resume; `args` its arguments.
    """

    op: str
    args: dict[str, Any] = field(default_factory=dict)


@_message("control_reply")
class ControlReply(Message):
    """Broker to client: the outcome of a `control`, sent once it is on disk."""

    ok: bool
    value: object = None
    error: str = ""


@_message("ping")
class Ping(Message):
    """Heartbeat; the receiver answers `pong`.

    From a worker, `running` lists the jobs its processes are running
    right now: if the worker is lost, only those count as an attempt.
    """

    running: list[int] = field(default_factory=list)


@_message("pong")
class Pong(Message):
    """Answer to `ping`."""


def encode(msg: Message) -> bytes:
    """One message as a complete frame, prefix included.

    Raises:
        ProtocolError: a field holds a value msgpack cannot encode.
    """
    return frame(pack_body(msg.to_wire()))


def encode_parts(msg: Message) -> list[bytes]:
    """One message as a frame in pieces to write in order (see `frame_parts`):
    a large body is not copied to join it to its prefix, and the large bytes
    values of `jobs` and `results` entries are not copied at all (see `splice`).

    Raises:
        ProtocolError: a field holds a value msgpack cannot encode.
    """
    if isinstance(msg, (Jobs, Results)):
        entries = msg.jobs if isinstance(msg, Jobs) else msg.results
        for entry in entries:
            if large_entry(entry):
                return _spliced(msg, entries)
    return frame_parts(pack_body(msg.to_wire()))


def _spliced(msg: Jobs | Results, entries: list[list[Any]]) -> list[bytes]:
    """`encode(msg)` in pieces, each entry with large bytes spliced in."""
    succession: list[tuple[str, Any]] = []
    if isinstance(msg, Jobs):
        succession = [(name, value) for name, value in (("holders", msg.holders), ("after", msg.after)) if value]
    keys = 3 if type(msg) is Results else 2 + len(succession)
    head = [bytes([0x80 | keys]), _TYPE_KEY, pack_body(msg.type), pack_body(msg.type)]
    head.append(array_header(len(entries)))
    pieces: list[bytes] = []
    small = head
    try:
        for entry in entries:
            if large_entry(entry):
                for piece in pack_pieces(entry):
                    if len(piece) < SPLICE_BYTES:
                        small.append(piece)
                        continue
                    if small:
                        pieces.append(b"".join(small))
                        small = []
                    pieces.append(piece)
            else:
                small.append(pack_body(entry))
        if isinstance(msg, Results):
            small += [_CREDIT_KEY, pack_body(msg.credit)]
        for name, value in succession:
            small += [pack_body(name), pack_body(value)]
    except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError...
        raise ProtocolError(f"cannot encode value: {exc}") from exc
    pieces.append(b"".join(small))
    return [prefix(sum(len(piece) for piece in pieces)), *pieces]


_TYPE_KEY = pack_body("type")
_CREDIT_KEY = pack_body("credit")


def encode_to_fit(msg: Message, max_body_bytes: int) -> tuple[list[bytes], list[list[Any]]]:
    """`msg` as frames whose bodies fit the receiver's limit, and the job
    entries that could not be sent at all.

    A `jobs` or `results` batch too large for one frame (or holding an
    entry msgpack cannot encode) is split in halves until each part fits.
    A single result that cannot go is replaced by an error saying so: the
    receiver would refuse it and drop the connection. A single job that
    cannot go is left out and returned, for the sender to fail that job
    alone: the broker must never lose a worker over a message it built.

    Raises:
        ProtocolError: a message of another kind that cannot be encoded
            or is too large to fit.
    """
    try:
        parts = encode_parts(msg)
    except ProtocolError:
        if not isinstance(msg, (Jobs, Results)):
            raise
        parts = []  # split it, to find the entry at fault
    body_bytes = sum(len(part) for part in parts) - 4
    if parts and body_bytes <= max_body_bytes:
        return parts, []
    if isinstance(msg, (Jobs, Results)):
        entries = msg.jobs if isinstance(msg, Jobs) else msg.results
        if len(entries) > 1:
            half = len(entries) // 2
            first, second = (
                # Both halves keep the whole succession: the worker reads it for its own jobs.
                (Jobs(entries[:half], msg.holders, msg.after), Jobs(entries[half:], msg.holders, msg.after))
                if isinstance(msg, Jobs)
                else (Results(entries[:half], msg.credit), Results(entries[half:]))
            )
            frames, unsent = encode_to_fit(first, max_body_bytes)
            more_frames, more_unsent = encode_to_fit(second, max_body_bytes)
            return frames + more_frames, unsent + more_unsent
        if isinstance(msg, Jobs):
            return [], list(entries)
        if entries:
            why = f"takes {body_bytes} bytes, over the frame limit of {max_body_bytes}" if parts else "cannot be encoded"
            error = error_value("ResultTooLarge", f"the result {why}")
            return [encode(Results([[entries[0][0], False, error]], msg.credit))], []
    raise ProtocolError(f"{msg.type} message of {body_bytes} bytes exceeds the limit of {max_body_bytes}")


def decode(body: bytes | bytearray | memoryview) -> Message:
    """One frame body (no prefix) as a message.

    Raises:
        ProtocolError: invalid msgpack, no or unknown `type`, a missing
            field or a field of the wrong type.
    """
    return from_wire(unpack_body(body))


def from_wire(wire: Any) -> Message:
    """Build and validate a message from a decoded msgpack value.

    Raises:
        ProtocolError: see `decode`.
    """
    if not isinstance(wire, dict):
        raise ProtocolError(f"message must be a map, not {type(wire).__name__}")
    tag = wire.get("type")
    if not isinstance(tag, str) or (cls := _registry.get(tag)) is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    kwargs = {}
    for name, base, required in _field_types[cls]:
        if name not in wire:
            if required:
                raise ProtocolError(f"{tag}: missing field {name!r}")
            continue
        value: Any = wire[name]
        if base is float and type(value) is int:
            value = float(value)  # an encoder may write 2.0 as 2
        if not isinstance(value, base) or (base is int and isinstance(value, bool)):
            raise ProtocolError(f"{tag}: field {name!r} must be {base.__name__}")
        checked: Any = value  # of type `base`; mypy cannot follow isinstance with a variable
        if base is float and not math.isfinite(checked):
            raise ProtocolError(f"{tag}: field {name!r} must be a finite number")
        if base is int:
            low, high = _INT_RANGES.get((cls.type, name), _INT64)
            if not low <= checked <= high:
                raise ProtocolError(f"{tag}: field {name!r} out of range [{low}, {high}]")
        elif base is str and len(checked) > _STR_LIMITS.get(name, _ANY_LENGTH):
            raise ProtocolError(f"{tag}: field {name!r} longer than {_STR_LIMITS[name]} characters")
        kwargs[name] = checked
    msg = cls(**kwargs)
    _checks.get(cls, _no_check)(msg)
    return msg


# The field tables from_wire reads stay here, defined, not imported from
# validate.py: CPython 3.11 compiles `NAME.get(...)` on an imported NAME as
# an attribute load and a bound-method call (it takes NAME for a module),
# which made a small message's decode a tenth slower.
# Integer fields: every one fits a signed 64-bit field; these fit less.
_INT64 = (-(2**63), 2**63 - 1)
_INT_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("hello", "processes"): (0, MAX_PROCESSES),
    ("welcome", "processes"): (0, 2**63 - 1),
    ("credit", "credit"): (0, MAX_CREDIT),
    ("results", "credit"): (0, MAX_CREDIT),
}
# String fields the broker keeps or logs, by name, whatever the message.
_STR_LIMITS = {"name": MAX_NAME_CHARS, "session": MAX_SESSION_CHARS}
_ANY_LENGTH = 1 << 62


def _no_check(msg: Message) -> None:
    pass


_checks: dict[type[Message], Callable[[Any], None]] = {_registry[tag]: check for tag, check in CHECKS_BY_TAG.items()}


def error_value(type_name: str, message: str, traceback: str = "") -> dict[str, Any]:
    """The value of a failed result: what the remote exception was."""
    return {"type": type_name, "message": message, "traceback": traceback}
