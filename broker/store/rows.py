"""The journal's shape on disk: a flush's journal entries as rows, one list
per statement (`rows_for`), and the rows a backend reads back as the
`Snapshot` the broker's state restores from. Pure: no database, no thread;
each backend (sqlite.py, postgres.py) binds these rows to its statements.
"""

from __future__ import annotations

import dataclasses
from typing import AbstractSet, Any, NamedTuple

import msgpack

from sockpool.protocol.messages import RESULT_DETACHED
from sockpool.protocol.splice import large_value, packed

from ..records import FailedJob, Job, StoredResult

Journal = list[tuple[Any, ...]]


class Snapshot(NamedTuple):
    """Everything a store kept: what `BrokerState.restore` rebuilds from."""

    jobs: list[Job]
    results: list[tuple[str, StoredResult]]
    failed: list[FailedJob]
    # Unfinished submissions that joined a job by its unique key:
    # (session, cid, gid of the job followed).
    followers: list[tuple[str, int, int]] = []
    # What `BrokerState.restore_settings` rebuilds from: paused queue names
    # and schedule records (broker/schedules.py `Schedule.record`).
    paused: list[str] = []
    schedules: list[dict[str, Any]] = []


@dataclasses.dataclass
class Rows:
    """One flush's journal as rows, one list per statement, in the order the
    statements must run (see `rows_for`)."""

    add: list[tuple[Any, ...]]        # (gid, session, cid, task, body, attempts, detached, key)
    # Jobs added and finished within the flush, if the backend asked for them
    # (`rows_for(finished_adds=True)`): the add's columns, then (ok, result, finished_at).
    add_finished: list[tuple[Any, ...]]
    attempts: list[tuple[Any, ...]]   # (attempts, gid)
    follow: list[tuple[Any, ...]]     # (session, cid, gid): a follower of a unique key
    follow_result: list[tuple[Any, ...]]  # (ok, result, finished_at, session, cid): joined a finished job
    finish: list[tuple[Any, ...]]     # (ok, result, finished_at, gid)
    # The same outcomes for the followers of those jobs (not skipped for a
    # job its submitter acknowledged at once: its followers still need it).
    finish_followers: list[tuple[Any, ...]]  # (ok, result, finished_at, gid)
    failed: list[tuple[Any, ...]]     # (gid, task, body, attempts, finished_at)
    unfail: list[tuple[Any, ...]]     # (gid,): retried by `broker retry`
    forget: list[tuple[Any, ...]]     # (gid,)
    unfollow: list[tuple[Any, ...]]   # (session, cid): a follower acknowledged its result
    expire: list[float]               # cutoffs
    # Queue pauses and schedules: rare, and their order matters (a schedule
    # added then removed), so kept in journal order, each one of
    # ("pause", queue), ("unpause", queue), ("schedule", name, body), ("unschedule", name).
    settings: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)


def rows_for(
    journal: Journal, finished_adds: bool = False, followers_stored: bool = True, large_pieces: bool = False,
) -> Rows:
    """A flush's journal as rows, one statement per kind of entry.

    Grouping by kind is safe because a job's entries only ever come in
    this order: add, attempts, finish, failed, forget (a follow comes
    before its job's finish; unfail and unfollow after what they undo).

    `finished_adds`: the backend inserts a job that finished within the
    flush as one finished row (`Rows.add_finished`) instead of an insert
    and an update. `followers_stored=False`: the backend holds no
    follower, so unless this flush adds one, finishes need no follower rows.
    `large_pieces`: an added job's body with large bytes is the list of
    its packed pieces (`Job.stored_body(pieces=True)`), not joined.
    """
    by_kind: dict[str, Journal] = {}
    for op in journal:
        by_kind.setdefault(op[0], []).append(op)
    # Only the kinds of entries the flush has are walked: an empty list
    # comprehension still costs its call, and a small flush (a few jobs'
    # adds, or one ack's forget) paid about 8 us for the kinds it lacked.
    forgets = by_kind.get("forget")
    # A job acknowledged within this flush needs no row at all: whatever
    # its add, attempts and finish would write, the delete removes.
    forgotten: AbstractSet[int] = {gid for op in forgets for gid in op[1]} if forgets else _NONE
    followed = followers_stored or "follow" in by_kind
    finishes = by_kind.get("finish")
    adds = [j for _, j in by_kind["add"] if j.gid not in forgotten] if "add" in by_kind else []
    finished: list[tuple[Any, ...]] = []
    if finishes or adds:
        # One packer for the flush: `msgpack.packb` builds a new Packer per
        # call, which cost more than the packing of a small value (2.0 -> 0.8 us).
        pack_small = msgpack.Packer(use_bin_type=True).pack
    if finishes:
        finished = [(int(ok), packed(value, True) if large_value(value) else pack_small(value), at, gid)
                    for _, gid, ok, value, at, *_ in finishes if followed or gid not in forgotten]
    add_finished: list[tuple[Any, ...]] = []
    if not finished:
        finish: list[tuple[Any, ...]] = []
        add = [_add_row(j, j.stored_body(pack_small, large_pieces)) for j in adds] if adds else []
    elif finished_adds:
        # A job that finished within this flush is written finished: its
        # arguments, never read again, are not packed at all.
        done = {row[3]: row for row in finished}
        add_finished = [(*_add_row(j, b""), *done[j.gid][:3]) for j in adds if j.gid in done]
        inserted = {row[0] for row in add_finished}
        finish = [row for row in finished if row[3] not in forgotten and row[3] not in inserted]
        add = [_add_row(j, j.stored_body(pack_small, large_pieces)) for j in adds if j.gid not in done]
    else:
        # Inserted with an empty body: its finish row follows in the same
        # transaction, so the row is never read unfinished.
        done = {row[3]: row for row in finished}
        finish = [row for row in finished if row[3] not in forgotten]
        add = [_add_row(j, b"" if j.gid in done else j.stored_body(pack_small, large_pieces)) for j in adds]
    return Rows(
        add=add,
        add_finished=add_finished,
        attempts=[(n, gid) for _, gid, n in by_kind["attempts"] if gid not in forgotten]
        if "attempts" in by_kind else [],
        follow=[op[1:] for op in by_kind["follow"]] if "follow" in by_kind else [],
        follow_result=[(int(ok), pack(value), at, session, cid)
                       for _, session, cid, ok, value, at in by_kind["follow_result"]]
        if "follow_result" in by_kind else [],
        finish=finish,
        finish_followers=finished if followed else [],
        failed=[(f.gid, f.task, pack([f.args, f.kwargs, f.error, f.session, f.size, f.cid, f.options, f.many,
                                      f.retryable]),
                 f.attempts, f.finished_at)
                for _, f in by_kind["failed"]] if "failed" in by_kind else [],
        unfail=[(gid,) for op in by_kind["unfail"] for gid in op[1]] if "unfail" in by_kind else [],
        forget=[(gid,) for op in forgets for gid in op[1]] if forgets else [],
        unfollow=[op[1:] for op in by_kind["unfollow"]] if "unfollow" in by_kind else [],
        expire=[cutoff for _, cutoff in by_kind["expire"]] if "expire" in by_kind else [],
        # Rare: a second walk over the journal only when there are some.
        settings=[setting_row(op) for op in journal if op[0] in _SETTINGS] if not _SETTINGS.isdisjoint(by_kind) else [],
    )


_NONE: frozenset[int] = frozenset()


def _add_row(j: Job, body: bytes | list[bytes]) -> tuple[Any, ...]:
    options = j.options  # j.result_mode and j.key, read once (None for almost every job)
    if options is None:
        return (j.gid, j.session, j.cid, j.task, body, j.attempts, 0, None)
    return (j.gid, j.session, j.cid, j.task, body, j.attempts, int(options.get("result") == RESULT_DETACHED),
            options.get("key"))


_SETTINGS = frozenset({"queue_paused", "schedule", "unschedule"})


def setting_row(op: tuple[Any, ...]) -> tuple[Any, ...]:
    if op[0] == "queue_paused":
        return ("pause" if op[2] else "unpause", op[1])
    if op[0] == "schedule":
        return ("schedule", op[1]["name"], pack(op[1]))
    return ("unschedule", op[1])


def snapshot_from_rows(job_rows: Any, failed_rows: Any, follower_rows: Any = ()) -> Snapshot:
    """Decode what `rows_for` wrote: (gid, session, cid, task, body, attempts,
    ok, result, finished_at, detached, key) per job, (gid, task, body,
    attempts, finished_at) per failed job and (session, cid, gid, ok,
    result, finished_at) per follower. A finished job's body may be
    empty: it is never read."""
    jobs: list[Job] = []
    results: list[tuple[str, StoredResult]] = []
    for gid, session, cid, task, body, attempts, ok, result, finished_at, detached, key in job_rows:
        if ok is None:
            jobs.append(Job.restored(gid, session, cid, task, bytes(body), attempts, len(body)))
        else:
            entry = [cid, bool(ok), msgpack.unpackb(bytes(result), raw=False)]
            results.append((session, StoredResult(gid, entry, finished_at, bool(detached), key=key)))
    failed = []
    for gid, task, body, attempts, finished_at in failed_rows:
        # Rows from before sessions were kept hold three fields: the
        # operator still sees them, no client does. Rows from before
        # `broker retry` lack what a retry needs, and cannot be retried.
        args, kwargs, error, *rest = msgpack.unpackb(bytes(body), raw=False)
        session, size = (rest + ["", 0])[:2]
        cid, options, many, retryable = rest[2:6] if len(rest) >= 6 else (0, None, False, False)
        failed.append(FailedJob(gid, task, args, kwargs, error, attempts, finished_at, session, size or len(body),
                                cid, options, many, retryable))
    followers = []
    for session, cid, gid, ok, result, finished_at in follower_rows:
        if ok is None:
            followers.append((session, cid, gid))
        else:
            entry = [cid, bool(ok), msgpack.unpackb(bytes(result), raw=False)]
            results.append((session, StoredResult(gid, entry, finished_at, follower=True)))
    return Snapshot(jobs, results, failed, followers)


def unfinished_from_rows(job_rows: Any) -> list[Job]:
    """Decode unfinished jobs' rows of (gid, session, cid, task, body,
    attempts): the lean path a restart's million jobs take (see
    `snapshot_from_rows` for every row of the table)."""
    restored = Job.restored
    return [
        restored(gid, session, cid, task, body if type(body) is bytes else bytes(body), attempts, len(body))
        for gid, session, cid, task, body, attempts in job_rows
    ]


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
