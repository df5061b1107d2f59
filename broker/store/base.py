"""What every store backend shares: the group-commit writer (the journal's
shape on disk, as rows and back, is rows.py).

The state journals what must survive a restart; `write()` queues those
entries together with the callback that may only run once they are durable
(it sends the `accepted` acknowledgements). One writer thread takes
everything queued, hands it to the backend's `_commit` as one transaction,
and runs the callbacks: one commit covers every submission that arrived
meanwhile (group commit), so durability costs a commit per batch, not per
job, whichever database is behind it.

A failed write loses nothing: the entries of a flush that did not commit
stay queued, in order, and the writer tries them again (after
RETRY_MIN_S, doubling to RETRY_MAX_S) together with whatever came
meanwhile, until they commit. Their callbacks wait for that commit, and so
does every later one: the store acknowledges nothing that is not durable,
and never holds a later entry without the earlier ones. While it cannot
write, the store tells its owner why (`on_health`, once per change: "disk
full" or the error), so the broker refuses new jobs rather than queue
entries it cannot write; it says so again when a write succeeds. Keeping
and retrying was chosen over stopping the broker: the in-memory state
already holds those entries, running jobs can finish and deliver their
results meanwhile, and the moment space returns the broker goes on by
itself. If the broker is killed before that, the store is consistent as
of the last commit: unwritten submissions were never acknowledged, and
unwritten finishes only mean a job runs again.

The writer holds a plain job's finish back, for at most holds.HOLD_S,
waiting for the ack that deletes its row (holds.py says which finishes,
the bound, and what a kill -9 leaves then): a job acknowledged in time
costs its row an insert and a delete, not an insert, an update and a delete.

The writer thread never dies of an exception: anything a commit raises
(an OverflowError as much as a full disk) is a failed write like any
other, and a failing callback is logged.

A backend (sqlite.py, postgres.py) only says how to commit a batch of rows
and how to read them back, and whether an error means its disk is full;
it decides nothing. Leadership and fencing, where
a backend has them, sit next to it, never in the broker's state.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Any, Callable, Iterator

from .holds import FinishHolds
from .leadership import Leadership, SoleLeadership
from .rows import Journal, Snapshot

log = logging.getLogger("sockpool.broker.store")

Deferred = Callable[[], None]
# How long `abandon` waits for a commit in progress (backends bound their
# statements well within it).
ABANDON_TIMEOUT_S = 15.0
Queued = list[tuple[Journal, "Deferred | None"]]
# Told the store's trouble (a `StoreTrouble`), or None once it writes again.
HealthHandler = Callable[["StoreTrouble | None"], None]

# A failed write is tried again after RETRY_MIN_S, doubling up to RETRY_MAX_S.
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0
# A store that still cannot write logs it again this often.
TROUBLE_LOG_EVERY_S = 30.0
# How long close() waits for a failing store before giving up on what is queued.
CLOSE_TIMEOUT_S = 5.0


class StoreTrouble:
    """Why the store cannot write: its disk is full, or another failure."""

    def __init__(self, disk_full: bool, detail: str) -> None:
        self.disk_full = disk_full
        self.detail = detail

    @property
    def reason(self) -> str:
        return "disk full" if self.disk_full else f"store write failed ({self.detail})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoreTrouble) and (self.disk_full, self.detail) == (other.disk_full, other.detail)

    def __repr__(self) -> str:
        return f"StoreTrouble({self.reason!r})"


class GroupCommitStore:
    """The store interface and its writer thread; backends subclass it.

    A backend implements `restore()`, `_commit(journal)` (one transaction,
    all or nothing, raising on failure) and `_close_backend()`.
    """

    def __init__(self) -> None:
        # Who may serve with this store; the one broker, unless a backend says otherwise.
        self.leadership: Leadership = SoleLeadership()
        self._abandoning = False
        self._cond = threading.Condition()
        self._queue: Queued = []
        # Finishes waiting for their acks (holds.py); the writer's alone.
        self._holds = FinishHolds()
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name="store", daemon=True)
        self._on_health: HealthHandler | None = None
        self.trouble: StoreTrouble | None = None  # written by the writer thread only
        self._logged_at = 0.0

    # -- the interface ---------------------------------------------------------

    def restore(self) -> Snapshot:
        """Everything stored (at start-up, before the writer runs)."""
        raise NotImplementedError

    def restore_in_parts(self) -> Iterator[Snapshot]:
        """What `restore()` returns, in parts: results and failed jobs come
        first (the broker can listen once it has them), unfinished jobs
        after, in batches in the order they were accepted, so the broker
        can hand the first ones to workers while it reads the rest. A
        backend that cannot read in parts returns everything at once."""
        yield self.restore()

    def start(self, on_health: HealthHandler | None = None) -> None:
        """Start the writer; `on_health` hears of trouble and recovery (on
        the writer thread, so it must not call back into the store).
        Again after `abandon`, with a new writer."""
        with self._cond:
            if self._thread.ident is not None:
                self._thread = threading.Thread(target=self._write_loop, name="store", daemon=True)
            self._closing = self._abandoning = False
            self.trouble = None
        self._on_health = on_health
        self._thread.start()

    def hold_finishes(self, seconds: float) -> None:
        """How long a finish may wait for its ack (holds.py; 0: not at all).
        Before `start`."""
        self._holds = FinishHolds(hold_s=seconds)

    def write(self, journal: Journal, after_commit: Deferred | None = None) -> None:
        """Queue journal entries; `after_commit` runs once they are durable."""
        with self._cond:
            self._queue.append((journal, after_commit))
            self._cond.notify()

    def close(self) -> None:
        """Write everything queued, then close. A store that cannot write
        gets CLOSE_TIMEOUT_S more; what is still unwritten then is lost, as
        in a kill, and said so."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            queued = self._take()
            if not self._flush(queued, everything=True):
                self._queue[:0] = queued
        with self._cond:
            unwritten = sum(len(journal) for journal, _ in self._queue) + len(self._holds)
        if unwritten:
            log.critical("closing with %d journal entries unwritten (%s); the store holds what was "
                         "committed before", unwritten, self.trouble.reason if self.trouble else "not written")
        self._close_backend()

    def abandon(self) -> None:
        """Stop the writer and drop what is queued, unwritten: this broker no
        longer leads, and what it did not commit was never acknowledged.
        `restore()` and `start()` take up again."""
        with self._cond:
            self._closing = self._abandoning = True
            self._queue = []
            self._cond.notify()
        # The writer's connection is closed only once the writer is done
        # with it: closing it under a running statement is not safe.
        if self._thread.is_alive():
            self._thread.join(timeout=ABANDON_TIMEOUT_S)
        with self._cond:
            self._queue = []  # what a failed flush put back meanwhile
            self._holds.clear()
        if self._thread.is_alive():
            log.error("the store writer is still busy after %.0f s; leaving its connection open", ABANDON_TIMEOUT_S)
        else:
            self._abandon_backend()

    # -- for the backends ------------------------------------------------------

    def _write_failed(self, exc: Exception) -> None:
        """A commit failed (already reported); a backend may react."""

    def _abandon_backend(self) -> None:
        """Break off anything the writer is waiting on (see `abandon`)."""

    def _commit(self, journal: Journal) -> None:
        """Write `journal` in one transaction; raise if it did not commit
        (having rolled back)."""
        raise NotImplementedError

    def _disk_full(self, exc: BaseException) -> bool:
        """Whether a failed commit means the disk is full."""
        return isinstance(exc, OSError) and exc.errno == errno.ENOSPC

    def _reclaim(self) -> None:
        """After a commit failed for a full disk: give back what space the
        backend can (its own logs), before the next try."""

    def _close_backend(self) -> None:
        raise NotImplementedError

    # -- the writer ------------------------------------------------------------

    def _take(self) -> Queued:
        queued, self._queue = self._queue, []
        return queued

    def _write_loop(self) -> None:
        retry_s = RETRY_MIN_S
        give_up_at: float | None = None
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    due = self._holds.next_due()
                    if due is None:
                        self._cond.wait()
                        continue
                    left = due - time.monotonic()
                    if left <= 0:
                        break  # a held finish waited long enough: write it
                    self._cond.wait(left)
                queued = self._take()
                closing = self._closing
            if self._flush(queued, everything=closing):
                retry_s = RETRY_MIN_S
                if closing:
                    with self._cond:
                        if not self._queue:
                            return
                continue
            # Not written: back to the front, in order, before anything newer.
            with self._cond:
                if self._abandoning:
                    return  # no longer ours to write
                self._queue[:0] = queued
                if closing:
                    give_up_at = give_up_at or time.monotonic() + CLOSE_TIMEOUT_S
                    if time.monotonic() >= give_up_at:
                        return
                self._cond.wait(retry_s)  # a close wakes us early
            retry_s = min(retry_s * 2, RETRY_MAX_S)

    def _flush(self, queued: Queued, everything: bool = False) -> bool:
        """Commit `queued` (with the held finishes that are due, or all of
        them if `everything`) and run its callbacks; whether it committed.
        Never raises."""
        now = time.monotonic()
        if not queued:
            due = self._holds.next_due()
            if due is None or (due > now and not everything):
                return True
        journal, plan = self._holds.plan([op for journal, _ in queued for op in journal], now, everything)
        try:
            # Nothing to write (a lone finish held back, an empty write
            # behind a resent job): everything before it in the queue was
            # committed by an earlier flush, so there is nothing to wait for.
            # An empty transaction cost about 22 us of the writer's CPU.
            if journal:
                self._commit(journal)
        except Exception as exc:  # any failure: nothing committed, nothing acknowledged
            trouble = StoreTrouble(self._disk_full(exc), f"{type(exc).__name__}: {exc}")
            if trouble.disk_full:
                try:
                    self._reclaim()
                except Exception:
                    pass  # no room even for that: the next retry tries again
            self._report(trouble, exc, sum(len(journal) for journal, _ in queued))
            self._write_failed(exc)
            return False
        self._holds.adopt(plan)
        if self.trouble is not None:
            log.warning("store writes again after %s; %d entries written", self.trouble.reason,
                        sum(len(journal) for journal, _ in queued))
            self.trouble = None
            self._tell(None)
        for _, after_commit in queued:
            if after_commit is not None:
                try:
                    after_commit()
                except Exception:  # top of the writer's work: log, go on
                    log.exception("a reply after a commit failed")
        return True

    def _report(self, trouble: StoreTrouble, exc: Exception, entries: int) -> None:
        now = time.monotonic()
        if trouble != self.trouble:
            log.critical("broker cannot store jobs: %s; %d journal entries kept to be written again, "
                         "new jobs are refused until then", trouble.reason, entries, exc_info=exc)
            self.trouble = trouble
            self._logged_at = now
            self._tell(trouble)
        elif now - self._logged_at >= TROUBLE_LOG_EVERY_S:
            log.critical("broker still cannot store jobs: %s; %d journal entries waiting", trouble.reason, entries)
            self._logged_at = now

    def _tell(self, trouble: StoreTrouble | None) -> None:
        if self._on_health is None:
            return
        try:
            self._on_health(trouble)
        except Exception:
            log.exception("the store's health handler failed")
