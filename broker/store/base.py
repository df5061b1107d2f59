"""What every store backend shares: the group-commit writer and the journal's
shape on disk.

The state journals what must survive a restart; `write()` queues those
entries together with the callback that may only run once they are durable
(it sends the `accepted` acknowledgements). One writer thread takes
everything queued, hands it to the backend's `_commit` as one transaction,
and runs the callbacks: one commit covers every submission that arrived
meanwhile (group commit), so durability costs a commit per batch, not per
job, whichever database is behind it.

A backend (sqlite.py, postgres.py) only says how to commit a batch of rows
and how to read them back; it decides nothing. Leadership and fencing, where
a backend has them, sit next to it, never in the broker's state.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable, NamedTuple

import msgpack

from ..records import FailedJob, Job, StoredResult

log = logging.getLogger("sockpool.broker.store")

Deferred = Callable[[], None]
Journal = list[tuple[Any, ...]]


class Snapshot(NamedTuple):
    """Everything a store kept: what `BrokerState.restore` rebuilds from."""

    jobs: list[Job]
    results: list[tuple[str, StoredResult]]
    failed: list[FailedJob]
    # What `BrokerState.restore_settings` rebuilds from: paused queue names
    # and schedule records (broker/schedules.py `Schedule.record`).
    paused: list[str] = []
    schedules: list[dict[str, Any]] = []


@dataclasses.dataclass
class Rows:
    """One flush's journal as rows, one list per statement, in the order the
    statements must run (see `rows_for`)."""

    add: list[tuple[Any, ...]]        # (gid, session, cid, task, body, attempts)
    attempts: list[tuple[Any, ...]]   # (attempts, gid)
    finish: list[tuple[Any, ...]]     # (ok, result, finished_at, gid)
    failed: list[tuple[Any, ...]]     # (gid, task, body, attempts, finished_at)
    forget: list[tuple[Any, ...]]     # (gid,)
    expire: list[float]               # cutoffs
    # Queue pauses and schedules: rare, and their order matters (a schedule
    # added then removed), so kept in journal order, each one of
    # ("pause", queue), ("unpause", queue), ("schedule", name, body), ("unschedule", name).
    settings: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)


def rows_for(journal: Journal) -> Rows:
    """A flush's journal as rows, one statement per kind of entry.

    Grouping by kind is safe because a job's entries only ever come in
    this order: add, attempts, finish, failed, forget.
    """
    by_kind: dict[str, Journal] = {}
    for op in journal:
        by_kind.setdefault(op[0], []).append(op)
    # A job acknowledged within this flush needs no row at all: whatever
    # its add, attempts and finish would write, the delete removes.
    forgotten = {gid for op in by_kind.get("forget", ()) for gid in op[1]}
    return Rows(
        add=[(j.gid, j.session, j.cid, j.task, pack([j.args, j.kwargs, j.many, j.options]), j.attempts)
             for _, j in by_kind.get("add", ()) if j.gid not in forgotten],
        attempts=[(n, gid) for _, gid, n in by_kind.get("attempts", ()) if gid not in forgotten],
        finish=[(int(ok), pack(value), at, gid)
                for _, gid, ok, value, at in by_kind.get("finish", ()) if gid not in forgotten],
        failed=[(f.gid, f.task, pack([f.args, f.kwargs, f.error, f.session, f.size]), f.attempts, f.finished_at)
                for _, f in by_kind.get("failed", ())],
        forget=[(gid,) for op in by_kind.get("forget", ()) for gid in op[1]],
        expire=[cutoff for _, cutoff in by_kind.get("expire", ())],
        settings=[setting_row(op) for op in journal if op[0] in _SETTINGS],
    )


_SETTINGS = frozenset({"queue_paused", "schedule", "unschedule"})


def setting_row(op: tuple[Any, ...]) -> tuple[Any, ...]:
    if op[0] == "queue_paused":
        return ("pause" if op[2] else "unpause", op[1])
    if op[0] == "schedule":
        return ("schedule", op[1]["name"], pack(op[1]))
    return ("unschedule", op[1])


def snapshot_from_rows(job_rows: Any, failed_rows: Any) -> Snapshot:
    """Decode what `rows_for` wrote: (gid, session, cid, task, body, attempts,
    ok, result, finished_at) per job and (gid, task, body, attempts,
    finished_at) per failed job."""
    jobs: list[Job] = []
    results: list[tuple[str, StoredResult]] = []
    for gid, session, cid, task, body, attempts, ok, result, finished_at in job_rows:
        if ok is None:
            args, kwargs, many, options = msgpack.unpackb(bytes(body), raw=False)
            jobs.append(Job(gid, session, cid, task, args, kwargs, many, options, attempts))
        else:
            entry = [cid, bool(ok), msgpack.unpackb(bytes(result), raw=False)]
            results.append((session, StoredResult(gid, entry, finished_at)))
    failed = []
    for gid, task, body, attempts, finished_at in failed_rows:
        # Rows from before sessions were kept hold three fields: the
        # operator still sees them, no client does.
        args, kwargs, error, *rest = msgpack.unpackb(bytes(body), raw=False)
        session, size = (rest + ["", 0])[:2] if rest else ("", len(body))
        failed.append(FailedJob(gid, task, args, kwargs, error, attempts, finished_at, session, size or len(body)))
    return Snapshot(jobs, results, failed)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


class GroupCommitStore:
    """The store interface and its writer thread; backends subclass it.

    A backend implements `restore()`, `_commit(journal)` (one transaction,
    all or nothing, raising on failure) and `_close_backend()`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[Journal, Deferred | None]] = []
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name="store", daemon=True)

    # -- the interface ---------------------------------------------------------

    def restore(self) -> Snapshot:
        """Everything stored (at start-up, before the writer runs)."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def write(self, journal: Journal, after_commit: Deferred | None = None) -> None:
        """Queue journal entries; `after_commit` runs once they are durable."""
        with self._cond:
            self._queue.append((journal, after_commit))
            self._cond.notify()

    def close(self) -> None:
        """Write everything queued, then close."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            self._flush(self._take())
        self._close_backend()

    # -- for the backends ------------------------------------------------------

    def _commit(self, journal: Journal) -> None:
        """Write `journal` in one transaction; raise if it did not commit."""
        raise NotImplementedError

    def _close_backend(self) -> None:
        raise NotImplementedError

    # -- the writer ------------------------------------------------------------

    def _take(self) -> list[tuple[Journal, Deferred | None]]:
        queued, self._queue = self._queue, []
        return queued

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                queued = self._take()
                closing = self._closing
            self._flush(queued)
            if closing:
                with self._cond:
                    rest = self._take()
                self._flush(rest)
                return

    def _flush(self, queued: list[tuple[Journal, Deferred | None]]) -> None:
        if not queued:
            return
        try:
            self._commit([op for journal, _ in queued for op in journal])
        except Exception:
            # Nothing is acknowledged that did not commit: clients resend
            # unacknowledged submissions when they reconnect.
            log.exception("store write failed; %d batches not acknowledged", len(queued))
            return
        for _, after_commit in queued:
            if after_commit is not None:
                after_commit()
