"""What the broker keeps per job, worker and client session. Plain data."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from sockpool.protocol.messages import DEFAULT_QUEUE
from sockpool.protocol.packed import array_length
from sockpool.protocol.splice import large_value, pack_pieces, packed


class Job:
    """One accepted job, kept small: a million queued jobs must fit in a few
    hundred MB (bench: "memory per queued job").

    Once the store has written a job, its arguments are kept packed, as
    msgpack `[args, kwargs, many, options]`, exactly the bytes the store
    writes and restores: one bytes object (not tracked by the garbage
    collector) instead of a list, a dict and their items. They are unpacked
    only when the job is handed to a worker; its options (None for almost
    every job) are kept unpacked too. Jobs with large
    bytes arguments keep them unpacked instead: packing would copy the
    bytes, and decoding them again at dispatch would copy them once more.

    A job without options (almost every job) is a plain `Job`: its options,
    queue and priority are the class's (None, the default queue, 0), not
    three slots of its own, 24 bytes a job. A job with options is an
    `OptionedJob`, which has those slots; `Job(...)` makes the right one.
    The three are set once, when the job is made, and never changed.
    """

    __slots__ = (
        "gid", "session", "cid", "task", "body",
        "attempts", "requeues", "worker", "calls", "queued_at", "dispatched_at", "notify", "cost",
        "limits", "followers",
    )
    # Those of a job without options; an OptionedJob's own slots hide them.
    options: dict[str, Any] | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = 0

    def __new__(
        cls, gid: int, session: str, cid: int, task: str, args: Any, kwargs: dict[str, Any], many: bool,
        options: dict[str, Any] | None = None, attempts: int = 0, cost: int = 0,
    ) -> Job:
        return object.__new__(OptionedJob if options else Job)

    def __init__(
        self,
        gid: int,
        session: str,
        cid: int,
        task: str,
        args: Any,
        kwargs: dict[str, Any],
        many: bool,
        options: dict[str, Any] | None = None,
        attempts: int = 0,
        cost: int = 0,
    ) -> None:
        """A job from its unpacked parts (a submit entry)."""
        options = options or None
        # Unpacked at first: most jobs go to a worker at once, and packing
        # them here only to unpack them at dispatch costs the broker more
        # CPU per job than anything else it does. The store packs a job when
        # it writes it (stored_body), and a job still waiting then keeps
        # the packed form.
        self._set(gid, session, cid, task, (args, kwargs, many, options), options,
                  array_length(args) if many else 1, attempts, cost)

    @classmethod
    def plain(cls, gid: int, session: str, cid: int, task: str, args: Any, kwargs: dict[str, Any], many: bool) -> Job:
        """`Job(...)` without options (almost every submitted job), in one
        call instead of three (__new__, __init__, _set)."""
        job = object.__new__(Job)
        job._set(gid, session, cid, task, (args, kwargs, many, None), None, array_length(args) if many else 1, 0, 0)
        return job

    @classmethod
    def restored(cls, gid: int, session: str, cid: int, task: str, body: bytes, attempts: int, cost: int = 0) -> Job:
        """A job from its stored row, its arguments left packed as they
        were stored (read once, for the options and the count of calls)."""
        args, _, many, options = msgpack.unpackb(body, raw=False)
        job = object.__new__(OptionedJob if options else Job)
        job._set(gid, session, cid, task, body, options or None, array_length(args) if many else 1, attempts, cost)
        return job

    def _set(
        self, gid: int, session: str, cid: int, task: str,
        body: bytes | tuple[Any, Any, bool, dict[str, Any] | None], options: dict[str, Any] | None,
        calls: int, attempts: int, cost: int,
    ) -> None:
        self.gid = gid
        self.session = sys.intern(session)
        self.cid = cid
        self.task = sys.intern(task)
        self.body = body  # packed [args, kwargs, many, options], or those four unpacked
        self.attempts = attempts  # runs that ended (result, crash, timeout)
        self.requeues = 0  # times its worker was lost while holding it
        self.worker: int | None = None
        # For status and metrics: calls in this job (a map chunk holds many),
        # when it last entered the ready queue and when it was last handed out.
        self.calls = calls
        # Bytes it counts against the quotas (broker/quota.py).
        self.cost = cost
        self.queued_at = 0.0
        self.dispatched_at = 0.0
        # Its session asked to hear when a worker takes it (`started`).
        self.notify = False
        # The limits whose slots it holds (broker/limits.py); None: none.
        self.limits: tuple[str, ...] | None = None
        # Other submissions of its unique key: (session, client id) each,
        # given the same outcome (broker/keys.py).
        self.followers: list[tuple[str, int]] | None = None

    def values(self) -> tuple[Any, dict[str, Any], bool, dict[str, Any] | None]:
        """args, kwargs, many, options."""
        body = self.body
        if type(body) is tuple:
            return body
        args, kwargs, many, _ = msgpack.unpackb(body, raw=False)
        return args, kwargs, many, self.options

    def stored_body(
        self, pack_small: Callable[[Any], bytes] | None = None, pieces: bool = False,
    ) -> bytes | list[bytes]:
        """The packed [args, kwargs, many, options] the store keeps.

        Called by the store's writer thread: from then on the job keeps the
        packed bytes instead of its unpacked values (one bytes object, not
        tracked by the garbage collector), so a deep queue costs a few
        hundred bytes a job. Swapping `body` is one attribute store, and
        `values()` reads either form, so the state's thread may read it at
        any moment. Large bytes arguments stay unpacked (see the class
        docstring). `pack_small` packs a value without large bytes (the
        writer's reused Packer); `msgpack.packb` if not given. `pieces`:
        a body with large bytes comes as `splice.pack_pieces` gives it,
        the large values uncopied, for a store that writes the pieces
        where they lie (the SQLite store's body files)."""
        body = self.body
        if isinstance(body, tuple):
            large = large_value(body[0])
            if large and pieces:
                return pack_pieces(list(body))
            stored = pack_small(list(body)) if pack_small is not None and not large else packed(list(body), large)
            if not large:
                self.body = stored
            return stored
        return body

    def entry(self) -> list[Any]:
        """The job as sent to a worker: our id, not the client's."""
        args, kwargs, many, _ = self.values()
        if self.options:
            return [self.gid, self.task, args, kwargs, many, self.options]
        return [self.gid, self.task, args, kwargs, many]

    # Unpacked on each read: for the rare paths (failures, tests), not dispatch.
    @property
    def args(self) -> Any:
        return self.values()[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.values()[1]

    @property
    def many(self) -> bool:
        return self.values()[2]

    @property
    def at(self) -> float | None:
        """The Unix time before which it may not run, if it was delayed."""
        return float(self.options["at"]) if self.options and "at" in self.options else None

    @property
    def result_mode(self) -> str | None:
        """The `result` option: RESULT_DETACHED, RESULT_NONE or None (the session's)."""
        return self.options.get("result") if self.options else None

    @property
    def retries(self) -> int:
        return int(self.options.get("retries", 0)) if self.options else 0

    @property
    def key(self) -> str | None:
        """Its unique key, if it was submitted with one."""
        return self.options.get("key") if self.options else None

    def __lt__(self, other: Job) -> bool:  # for the retry heap
        return self.gid < other.gid


class OptionedJob(Job):
    """A job submitted with options: they, its queue and its priority are its own."""

    __slots__ = ("options", "queue", "priority")

    def _set(
        self, gid: int, session: str, cid: int, task: str,
        body: bytes | tuple[Any, Any, bool, dict[str, Any] | None], options: dict[str, Any] | None,
        calls: int, attempts: int, cost: int,
    ) -> None:
        super()._set(gid, session, cid, task, body, options, calls, attempts, cost)
        # Unpacked too: asked of every job (limits, keys, result mode).
        self.options = options
        # Where and in what order it runs (broker/dispatch.py).
        self.queue = options.get("queue", DEFAULT_QUEUE) if options else DEFAULT_QUEUE
        self.priority = options.get("priority", 0) if options else 0


@dataclass
class WorkerInfo:
    conn_id: int
    name: str
    address: str
    tasks: frozenset[str]
    processes: int
    joined_at: float
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)  # most preferred first
    credit: int = 0
    leased: dict[int, Job] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)  # from its last ping
    draining: bool = False
    # It honours `jobs.after`: a limit's slot may pass on at it (broker/succession.py).
    successors: bool = False
    done: int = 0
    failed: int = 0
    last_seen: float = 0.0


@dataclass
class StoredResult:
    gid: int
    entry: list[Any]  # [cid, ok, value] as sent to the client
    finished_at: float
    detached: bool = False  # kept even once its session cannot come back
    # The result of a job this session only followed (same unique key):
    # acknowledging it forgets this copy, not the job's own row.
    follower: bool = False
    key: str | None = None  # the job's unique key, held until this is acknowledged


@dataclass
class Session:
    """A client's identity across reconnects; results are routed to it.

    Results stay here until the client acknowledges them, so a client that
    reconnects (or a new process attaching to the session) gets every
    result it has not confirmed.
    """

    session_id: str
    conn_id: int | None
    live: dict[int, int] = field(default_factory=dict)  # cid -> gid, not finished
    results: dict[int, StoredResult] = field(default_factory=dict)  # cid -> result
    gone_since: float | None = None
    # The client asked (hello.started) to be told when its jobs go to a worker.
    wants_started: bool = False
    # Gone past the grace: results of its jobs that are not detached are
    # not kept (until it comes back after all).
    abandoned: bool = False

    def holds(self, cid: int) -> bool:
        return cid in self.live or cid in self.results


@dataclass
class FailedJob:
    """A job that failed for good, kept for `broker failed` until its TTL.

    Bounded in size (see `admission.bounded_failure`); `size` is the bytes
    its row takes on the wire, for paging the list into frames.
    """

    gid: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    error: Any
    attempts: int
    finished_at: float
    session: str = ""
    size: int = 0
    # What `broker retry` needs to send it again as it was sent: the
    # client id in its session, its options, whether it is a map chunk,
    # and whether its arguments were kept whole (see admission.bounded_failure).
    cid: int = 0
    options: dict[str, Any] | None = None
    many: bool = False
    retryable: bool = False

    def row(self) -> list[Any]:
        """As in `failed_jobs`: the broker id and whether `retry` can send it
        again come last (older readers take the first six)."""
        return [self.task, self.args, self.kwargs, self.error, self.attempts, self.finished_at, self.gid, self.retryable]
